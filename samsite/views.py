"""Project-level endpoints."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import connection
from django.http import JsonResponse
from django.views import defaults
from django.views.decorators.http import require_GET

from datasets.segmentation import app_segmenter_status

logger = logging.getLogger(__name__)


@require_GET
def health(request):
    """Liveness and configuration: answers without loading the model (the SAM fields of SEED_API.md, plus the
    model's ``family`` and ``label``). ``status`` is "degraded" when the database fails (503) or when the
    configured checkpoint is unreadable or of no known family (200: the app still serves; ``error`` says
    what was found). ``model_state`` is ``"loading"`` while the background preload runs (SAM_PRELOAD), then
    ``"loaded"``, or ``"error"`` with ``model_error`` saying why; ``"not_loaded"`` until anything asked for it.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        database = "ok"
    except Exception:  # health must report, not raise
        logger.exception("health: database check failed")
        database = "error"
    seg = app_segmenter_status()
    body = {
        "status": "ok" if database == "ok" and not seg.get("error") else "degraded",
        "database": database,
        "database_vendor": connection.vendor,
        "sam_loaded": seg["sam_loaded"],
        "model_state": seg["model_state"],
        "model_error": seg["model_error"],
        "backend": seg["backend"],
        "model": seg["model"],
        "checkpoint": seg.get("checkpoint"),
        "device": seg["device"],
        "family": seg.get("family"),
        "label": seg.get("label"),
        "error": seg.get("error"),
    }
    return JsonResponse(body, status=200 if database == "ok" else 503)


# --- error pages: JSON on API paths, Django's pages elsewhere -------------------------------------------

#: Paths whose clients are programs: every error there is ``{"error", "detail"}`` JSON, never an HTML page.
API_PREFIXES = ("/api/", "/sam/", "/health")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def _json_error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def bad_request(request, exception=None):
    if is_api_path(request.path):
        if isinstance(exception, RequestDataTooBig):
            return _json_error(413, "request_too_large", str(exception) or "request body too large")
        if isinstance(exception, TooManyFieldsSent | TooManyFilesSent):
            return _json_error(400, "too_many_fields", str(exception))
        return _json_error(400, "bad_request", str(exception) or "bad request")
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if is_api_path(request.path):
        return _json_error(403, "forbidden", str(exception) or "forbidden")
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception=None):
    if is_api_path(request.path):
        return _json_error(404, "not_found", "not found")
    return defaults.page_not_found(request, exception)


def server_error(request):
    if is_api_path(request.path):
        return _json_error(500, "internal_error", "unexpected server error")
    return defaults.server_error(request)
