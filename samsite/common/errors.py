"""Domain errors raised by services; each interface renders them its own way (JSON, page message, SSE)."""

from __future__ import annotations


class ServiceError(Exception):
    """A refused write with a stable machine ``code``, a human ``message``, an HTTP ``status`` and extras.

    The REST API renders it as ``{"error": code, "detail": message, **extra}``; the seed-compatible API as
    ``{"error": code, ...}``; pages show ``message``.
    """

    def __init__(self, code: str, message: str | None = None, *, status: int = 400, **extra):
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.status = status
        self.extra = extra
