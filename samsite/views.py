"""Project-level endpoints."""

from __future__ import annotations

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from datasets.segmentation import app_segmenter_status

logger = logging.getLogger(__name__)


@require_GET
def health(request):
    """Liveness and configuration: answers without loading the model (the SAM fields of SEED_API.md).

    ``model_state`` is ``"loading"`` while the background preload runs (SAM_PRELOAD), then ``"loaded"``, or
    ``"error"`` with ``model_error`` saying why; ``"not_loaded"`` until anything asked for the model.
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
        "status": "ok" if database == "ok" else "degraded",
        "database": database,
        "database_vendor": connection.vendor,
        "sam_loaded": seg["sam_loaded"],
        "model_state": seg["model_state"],
        "model_error": seg["model_error"],
        "backend": seg["backend"],
        "model": seg["model"],
        "checkpoint": seg.get("checkpoint"),
        "device": seg["device"],
    }
    return JsonResponse(body, status=200 if database == "ok" else 503)
