"""Errors with a stable JSON shape: {"error": {"message", "type", "code", "param"}}.

The shape is OpenAI's, so its clients surface the message as is.
"""
from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    @property
    def type(self) -> str:
        if self.status == 401:
            return "authentication_error"
        if self.status in (429, 503):
            return "server_busy" if self.status == 503 else "rate_limit_error"
        if self.status >= 500:
            return "server_error"
        return "invalid_request_error"

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code,
                          "param": self.param}}


class StartupError(RuntimeError):
    """The server refuses to start; the message says what to fix."""
