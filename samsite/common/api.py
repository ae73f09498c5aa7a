"""Project-wide DRF glue: every API error is JSON with an ``error`` code."""

from __future__ import annotations

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from imaging.errors import ImagingError
from samsite.common.errors import ServiceError


class ApiError(exceptions.APIException):
    """An API error with a stable machine code, rendered as ``{"error": code, "detail": message, ...extra}``."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, detail: str | None = None, *, status_code: int | None = None, **extra):
        super().__init__(detail or code, code)
        self.error_code = code
        self.extra = extra
        if status_code is not None:
            self.status_code = status_code


def exception_handler(exc, context):
    """DRF's handler, then normalise the body so clients can always read ``error``."""
    if isinstance(exc, ServiceError):
        exc = ApiError(exc.code, exc.message, status_code=exc.status, **exc.extra)
    elif isinstance(exc, ImagingError):
        exc = ApiError(getattr(exc, "code", "invalid_input"), str(exc), **_imaging_extra(exc))
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ApiError):
        response.data = {"error": exc.error_code, "detail": str(exc.detail), **exc.extra}
    elif isinstance(exc, exceptions.ValidationError):
        response.data = {"error": "validation_error", "detail": "Invalid input.", "fields": response.data}
    elif isinstance(exc, exceptions.Throttled):
        scope = getattr(context.get("view"), "throttle_scope", None)
        response.data = {
            "error": "throttled",
            "detail": str(exc.detail),
            "retry_after": exc.wait,
            **({"limit": f"THROTTLE_{scope.upper()}"} if scope else {}),
        }
    elif isinstance(response.data, dict) and "detail" in response.data:
        code = getattr(exc, "default_code", "error")
        if isinstance(exc, exceptions.NotFound) or response.status_code == status.HTTP_404_NOT_FOUND:
            code = "not_found"
        response.data = {"error": code, **response.data}
    return response


def _imaging_extra(exc: ImagingError) -> dict:
    extra = {}
    for attribute in ("field", "index"):
        value = getattr(exc, attribute, None)
        if value is not None:
            extra[attribute] = value
    return extra


def error_response(code: str, status_code: int = 400, **extra) -> Response:
    return Response({"error": code, **extra}, status=status_code)
