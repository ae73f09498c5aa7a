from __future__ import annotations

from datasets.segmentation import app_segmenter_status


def segmentation_backend(request) -> dict:
    """The header shows which segmenter runs (without loading it)."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    from frontend.presenters import segmenter_chip

    status = app_segmenter_status()
    return {"segmentation": status, "segmenter_chip": segmenter_chip(status)}
