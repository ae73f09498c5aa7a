"""Annotations of a job's masks and their quality flags: what makes an image worth a second look.

Per annotation (one template's mask on one image) the job keeps SAM's predicted IoU (``score``), the
stability score of the mask logits (None on the classical backend, which has no logits), area, COCO box and
compressed RLE (``imaging.annotations``), and flags:

* ``empty``: the mask has no pixel;
* ``whole_image``: it covers more than ``QUALITY_MAX_AREA_FRACTION`` of the image;
* ``area_drift`` / ``centroid_drift``: compared with the template's *reference mask* (its points segmented on
  the template's reference image), its share of the image is more than ``QUALITY_AREA_DRIFT_RATIO`` times
  smaller or larger, or its centroid moved more than ``QUALITY_CENTROID_DRIFT`` (normalised coordinates).

Reference masks are segmented once per job: the first worker to need one stores its statistics in the
shared cache (Redis or the database cache) under the job's id; any other worker or chunk reads them back.
A lost cache entry is recomputed, with the same result (the embedding is cached and prediction is
deterministic), so the cache decides nothing. A template without a reference image gets no drift check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from django.conf import settings
from django.core.cache import cache

from datasets.image_io import decode_dataset_image
from datasets.models import DatasetImage, GenerationJob
from datasets.segmentation import embedding_for
from imaging.annotations import (
    MaskStats,
    QualityThresholds,
    mask_stats,
    quality_flags,
    rle_bbox,
    rle_encode,
)
from imaging.pipeline import TemplateMask, TemplateSpec, segment_templates

logger = logging.getLogger(__name__)

_REFERENCE_TTL_S = 7 * 24 * 3600


def thresholds() -> QualityThresholds:
    """The thresholds in force (settings ``QUALITY_*``)."""
    return QualityThresholds(
        max_area_fraction=float(settings.QUALITY_MAX_AREA_FRACTION),
        area_drift_ratio=float(settings.QUALITY_AREA_DRIFT_RATIO),
        centroid_drift=float(settings.QUALITY_CENTROID_DRIFT),
    )


def snapshot_labels(job: GenerationJob) -> dict[str, str]:
    """Template id -> the label the job ran with (the name when the snapshot predates labels)."""
    return {t["template_id"]: t.get("label") or t["name"] for t in job.templates_snapshot or []}


def reference_stats(*, job: GenerationJob, specs: Sequence[TemplateSpec], segmenter) -> dict[str, MaskStats]:
    """Template id -> statistics of its reference mask, for the templates that have a reference image.

    Failures (the reference image deleted or unreadable) only drop that template's drift check.
    """
    refs = {t["template_id"]: t.get("reference_image_id") for t in job.templates_snapshot or []}
    out: dict[str, MaskStats] = {}
    for spec in specs:
        image_id = refs.get(spec.id)
        if not image_id:
            continue
        key = f"samgen:refmask:{job.id.hex}:{spec.id}:{segmenter.fingerprint}"
        cached = _cache_get(key)
        if cached is not None:
            out[spec.id] = MaskStats.from_dict(cached)
            continue
        image = DatasetImage.objects.filter(pk=image_id, dataset_id=job.dataset_id).first()
        if image is None:
            continue
        try:
            decoded = decode_dataset_image(image)
            embedding, _ = embedding_for(sha256=image.sha256, rgb=decoded.rgb, segmenter=segmenter)
            [mask] = segment_templates(
                segmenter, embedding, [spec], width=decoded.width, height=decoded.height
            )
        except Exception:
            logger.info("job %s: no reference mask for template %s", job.id, spec.id, exc_info=True)
            continue
        stats = mask_stats(mask.mask)
        _cache_set(key, stats.to_dict())
        out[spec.id] = stats
    return out


def _cache_get(key: str):
    try:
        return cache.get(key)
    except Exception:  # the cache only saves work: without it the reference mask is recomputed
        logger.warning("cache unavailable for %s", key, exc_info=True)
        return None


def _cache_set(key: str, value: dict) -> None:
    try:
        cache.set(key, value, timeout=_REFERENCE_TTL_S)
    except Exception:
        logger.warning("cache unavailable for %s", key, exc_info=True)


def annotation_record(
    mask: TemplateMask,
    *,
    label: str,
    reference: MaskStats | None,
    limits: QualityThresholds,
) -> dict:
    """The JSON-safe annotation of one template's mask (the entries of ``Variant.annotations``)."""
    rle = rle_encode(mask.mask)
    stats = mask_stats(mask.mask)
    flags = quality_flags(stats, reference, limits)
    return {
        "template_id": mask.template_id,
        "label": label,
        "score": round(float(mask.score), 6),
        "stability": None if mask.stability is None else round(float(mask.stability), 6),
        "area": stats.area,
        "bbox": rle_bbox(rle),
        "rle": rle,
        "flags": [{"code": code, "detail": detail} for code, detail in flags],
    }


def variant_quality(annotations: Sequence[Mapping]) -> tuple[list[dict], float | None]:
    """A variant's ``flags`` (each annotation's, with its template and label) and lowest stability."""
    flags = [
        {"code": f["code"], "template_id": a["template_id"], "label": a["label"], "detail": f["detail"]}
        for a in annotations
        for f in a.get("flags", [])
    ]
    stabilities = [a["stability"] for a in annotations if a.get("stability") is not None]
    return flags, (min(stabilities) if stabilities else None)
