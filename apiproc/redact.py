"""Keep the API key out of everything a person or a log collector can read.

    install_redaction(api_key)     # every log record from then on has the key masked
    print(redact(text, api_key))

The key never appears in logs (any level), the summary, the resume command or an
error message; output files never contain request headers in the first place.
"""

from __future__ import annotations

import logging

MASK = "[redacted]"
# Shorter strings are no real key, and masking them would garble ordinary text.
MIN_SECRET_LENGTH = 8
KEY_OPTIONS = ("--api-key", "--api_key")


def redact(text: str, secret: str) -> str:
    return text.replace(secret, MASK) if len(secret) >= MIN_SECRET_LENGTH else text


def redact_arguments(arguments: list[str]) -> list[str]:
    """A command line with the value of its API-key option masked, whatever the key."""
    masked: list[str] = []
    hide_next = False
    for argument in arguments:
        if hide_next:
            masked.append(MASK)
            hide_next = False
        elif argument in KEY_OPTIONS:
            masked.append(argument)
            hide_next = True
        elif argument.startswith(tuple(option + "=" for option in KEY_OPTIONS)):
            masked.append(argument.split("=", 1)[0] + "=" + MASK)
        else:
            masked.append(argument)
    return masked


class KeyRedactor(logging.Filter):
    """A logging filter that masks one secret in the formatted message and traceback."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if len(self.secret) < MIN_SECRET_LENGTH:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message, self.secret)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secret)
        return True


def install_redaction(secret: str) -> None:
    """Mask `secret` in every record that reaches the root logger's handlers."""
    redactor = KeyRedactor(secret)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
