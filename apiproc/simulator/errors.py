"""The error a simulated endpoint answers with, raised from wherever the problem is found.

    raise invalid("max_tokens: Field required")  # 400 invalid_request_error
    raise ApiError(404, "not_found_error", "model: claude-nope")

The server turns an ApiError into the documented error body and status; nothing else needs
to know how errors are shaped on the wire.
"""

from __future__ import annotations


class ApiError(Exception):
    """A request the API refuses; carries what the error response needs."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def invalid(message: str) -> ApiError:
    """A 400 ``invalid_request_error`` with ``message``."""
    return ApiError(400, "invalid_request_error", message)
