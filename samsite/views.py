"""Project-level endpoints."""

from __future__ import annotations

import logging

from django.core.exceptions import SuspiciousOperation
from django.db import connection
from django.http import JsonResponse
from django.views import defaults
from django.views.decorators.http import require_GET

from datasets.segmentation import app_segmenter_status
from samsite.common.errors import UNEXPECTED, ErrorInfo, error_info
from samsite.common.fields import ErrorSerializer

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


def _json_error(info: ErrorInfo) -> JsonResponse:
    return JsonResponse(ErrorSerializer(info.body()).data, status=info.status)


def bad_request(request, exception=None):
    if is_api_path(request.path):
        # The oversize/too-many refusals by the one error table; any other 400 (BadRequest, ...) is generic.
        info = error_info(exception) if isinstance(exception, SuspiciousOperation) else None
        return _json_error(info or ErrorInfo(400, "bad_request", str(exception or "") or "bad request"))
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if is_api_path(request.path):
        return _json_error(ErrorInfo(403, "forbidden", str(exception or "") or "forbidden"))
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception=None):
    if is_api_path(request.path):
        return _json_error(ErrorInfo(404, "not_found", "not found"))
    return defaults.page_not_found(request, exception)


def server_error(request):
    if is_api_path(request.path):
        return _json_error(UNEXPECTED)
    return defaults.server_error(request)
