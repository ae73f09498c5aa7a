"""The one error type of the services and the one table mapping every expected error to its HTTP answer.

Services raise :class:`ServiceError`; :mod:`imaging` raises the :class:`imaging.errors.ImagingError` family;
Django and DRF raise their own. :func:`error_info` maps any of them to an :class:`ErrorInfo` (status, code,
detail, extras) from :data:`ERROR_TABLE`, so the REST API (``samsite.common.api.exception_handler``), the
seed-compatible API (``legacy.http.seed_error``, also used by its streams), the site's JSON error pages and
the pages' messages all say the same thing for the same failure.

The seed-compatible API is frozen by old clients: where its codes differed from the REST API's before the
table existed, :data:`SEED_OVERRIDES` keeps them (``error_info(exc, seed=True)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions

from imaging.errors import (
    CheckpointError,
    EditValidationError,
    ImageDecodeError,
    ImagingError,
    PointValidationError,
    SegmenterUnavailable,
)
from samsite.common.throttles import limit_name


class ServiceError(Exception):
    """A refused write with a stable machine ``code``, a human ``message``, an HTTP ``status`` and extras.

    Every interface renders it through :func:`error_info`: the APIs as ``{"error": code, "detail": message,
    **extra}`` with ``status``; pages show ``message``.
    """

    def __init__(self, code: str, message: str | None = None, *, status: int = 400, **extra):
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.status = status
        self.extra = extra


@dataclass(frozen=True)
class ErrorInfo:
    """How one error is answered: HTTP ``status``, machine ``code``, human ``detail`` and body ``extra``s."""

    status: int
    code: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON body every API answers errors with: ``{"error": code, "detail": detail, **extra}``."""
        return {"error": self.code, "detail": self.detail, **self.extra}


#: What an exception no row maps is answered with (after logging it): never a traceback or an HTML page.
UNEXPECTED = ErrorInfo(500, "internal_error", "unexpected server error")

Rule = tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[Any], ErrorInfo]]


def _throttled(exc: exceptions.Throttled) -> ErrorInfo:
    # ``scope`` is set by the handler from the view that refused (throttles do not record it).
    scope = getattr(exc, "scope", None)
    extra = {"retry_after": exc.wait, **({"limit": limit_name(scope)} if scope else {})}
    return ErrorInfo(exc.status_code, "throttled", str(exc.detail), extra)


def _api_exception(exc: exceptions.APIException) -> ErrorInfo:
    return ErrorInfo(exc.status_code, exc.default_code, str(exc.detail))


def _denied_detail(exc: BaseException) -> str:
    """DRF's PermissionDenied carries ``detail``; Django's, a message or nothing (DRF's default text then)."""
    detail = getattr(exc, "detail", None)
    return str(detail) if detail is not None else str(exc) or exceptions.PermissionDenied.default_detail


#: First matching row wins, so subclasses come before their bases.
ERROR_TABLE: tuple[Rule, ...] = (
    (ServiceError, lambda exc: ErrorInfo(exc.status, exc.code, exc.message, dict(exc.extra))),
    # imaging/ raises these on bad input or a missing model; their messages are safe to show as they are.
    ((SegmenterUnavailable, CheckpointError), lambda exc: ErrorInfo(503, "sam_model_not_loaded", str(exc))),
    (EditValidationError, lambda exc: ErrorInfo(400, "invalid_edits", str(exc), {"field": exc.field})),
    (PointValidationError, lambda exc: ErrorInfo(400, "invalid_points", str(exc), {"index": exc.index})),
    (ImageDecodeError, lambda exc: ErrorInfo(400, "invalid_image", str(exc))),
    (ImagingError, lambda exc: ErrorInfo(400, "invalid_input", str(exc))),
    # Django's exceptions; the SuspiciousOperation family is raised while reading the request body.
    (Http404, lambda exc: ErrorInfo(404, "not_found", str(exc) or "not found")),
    (
        RequestDataTooBig,
        lambda exc: ErrorInfo(413, "request_too_large", str(exc) or "request body too large"),
    ),
    (TooManyFilesSent, lambda exc: ErrorInfo(400, "too_many_files", str(exc) or "too many files")),
    (TooManyFieldsSent, lambda exc: ErrorInfo(400, "too_many_fields", str(exc) or "too many fields")),
    (SuspiciousOperation, lambda exc: ErrorInfo(400, "bad_request", str(exc) or "bad request")),
    (
        DjangoPermissionDenied,
        lambda exc: ErrorInfo(403, "permission_denied", _denied_detail(exc)),
    ),
    # DRF's exceptions: their status (DRF turns a 401 into 403 when no scheme can challenge) and code.
    (exceptions.NotFound, lambda exc: ErrorInfo(404, "not_found", str(exc.detail))),
    (
        exceptions.ValidationError,
        lambda exc: ErrorInfo(exc.status_code, "validation_error", "Invalid input.", {"fields": exc.detail}),
    ),
    (exceptions.Throttled, _throttled),
    (exceptions.APIException, _api_exception),
)

#: Where the seed-compatible API answered differently before the table; its clients depend on these.
SEED_OVERRIDES: tuple[Rule, ...] = (
    (TooManyFieldsSent, lambda exc: ErrorInfo(400, "too_many_files", str(exc) or "too many fields")),
    (
        (exceptions.NotAuthenticated, exceptions.AuthenticationFailed),
        lambda exc: ErrorInfo(401, "unauthorized", str(exc.detail)),
    ),
    (
        exceptions.ParseError,
        lambda exc: ErrorInfo(
            400, "invalid_json" if "JSON" in str(exc.detail) else "bad_request", str(exc.detail)
        ),
    ),
    (
        (exceptions.PermissionDenied, DjangoPermissionDenied),
        lambda exc: ErrorInfo(403, "forbidden", _denied_detail(exc)),
    ),
    (exceptions.ValidationError, _api_exception),
)


def error_info(exc: BaseException, *, seed: bool = False) -> ErrorInfo | None:
    """The answer to ``exc`` by :data:`ERROR_TABLE` (with ``seed``: :data:`SEED_OVERRIDES` first); None for an
    exception no row maps, which the caller logs and answers as :data:`UNEXPECTED` (or lets Django answer)."""
    rules = (*SEED_OVERRIDES, *ERROR_TABLE) if seed else ERROR_TABLE
    for types, describe in rules:
        if isinstance(exc, types):
            return describe(exc)
    return None


def error_message(exc: BaseException) -> str:
    """The message a page shows for ``exc``: the table's ``detail``, or a generic one for the unexpected."""
    info = error_info(exc)
    return info.detail if info is not None else UNEXPECTED.detail
