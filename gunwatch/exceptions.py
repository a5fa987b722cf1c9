"""Errors that services raise and the API turns into the one error shape."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A business rule said no. ``code`` is stable, devices switch on it."""

    status_code = 400

    def __init__(
        self, message: str, *, code: str = "invalid", extra: dict[str, Any] | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.extra = extra or {}
        self.status_code = status
