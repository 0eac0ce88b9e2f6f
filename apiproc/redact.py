"""Keep the API key out of everything a person or a log collector can read.

    install_redaction(api_key)     # every log record from then on has the key masked
    print(redact(text, api_key))

The key never appears in logs (any level), the summary, the resume command or an
error message; output files never contain request headers in the first place.
"""

from __future__ import annotations

import logging

MASK = "[redacted]"


def redact(text: str, secret: str) -> str:
    return text.replace(secret, MASK) if secret else text


class KeyRedactor(logging.Filter):
    """A logging filter that masks one secret in the formatted message and traceback."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secret:
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
