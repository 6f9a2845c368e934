"""The one error type of the web service: answered as JSON {"error": message} with a status."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered as JSON {"error": message} with an HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
