"""The one error type of the web service: answered as JSON {"error": message} with a status."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered as JSON {"error": message} with an HTTP status.

    close: answer with `Connection: close` (the request body was not read to its end).
    """

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
