"""Turning models and service results into what the page templates show (no writes here).

Kept out of the views so they stay "parse, call one service, render", and shared with ``frontend.live``,
which renders the same job fragments for the SSE stream.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone
from PIL import Image

from datasets.image_io import decode_stored_image
from datasets.models import Dataset, DatasetImage, GenerationJob, ItemStatus, JobItem, JobStatus
from datasets.selectors import job_items, variant_list_for_job
from datasets.services.previews import segment_preview
from imaging.codecs import b64encode, encode_mask_png, make_thumbnail
from imaging.edits import EDIT_FIELDS, NEUTRAL_VALUES
from imaging.points import parse_points
from samsite.errors import ServiceError

from .forms import edit_rows

STRIP_SIZE = 6
PREVIEW_MAX_SIDE = 1024
MASK_THUMB_SIDE = 176
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


# --- datasets ----------------------------------------------------------------------------------------------


def attach_thumbnail_strips(datasets: Sequence[Dataset]) -> None:
    """Set ``dataset.strip`` to its first few images (one query for all the cards)."""
    if not datasets:
        return
    rows = (
        DatasetImage.objects.filter(dataset__in=datasets)
        .annotate(rank=Window(RowNumber(), partition_by=[F("dataset_id")], order_by=F("position").asc()))
        .filter(rank__lte=STRIP_SIZE)
        .only("id", "dataset_id", "filename", "thumbnail", "position")
        .order_by("dataset_id", "position")
    )
    by_dataset: dict = defaultdict(list)
    for image in rows:
        by_dataset[image.dataset_id].append(image)
    for dataset in datasets:
        dataset.strip = by_dataset.get(dataset.id, [])


def workspace_context(dataset: Dataset, *, step: str) -> dict:
    """The header and step tabs of a dataset's pages."""
    return {
        "dataset": dataset,
        "step": step,
        "nav": "datasets",
        "image_count": dataset.images.count(),
        "template_count": dataset.templates.count(),
        "job_count": dataset.jobs.count(),
    }


def upload_error_text(exc: ServiceError) -> str:
    """A sentence for the upload errors whose message is a machine string (``max_images_exceeded:3/2``)."""
    if exc.code == "max_images_exceeded" and ":" in exc.message:
        counts = exc.message.split(":", 1)[1]
        have, _, limit = counts.partition("/")
        return f"Too many images: this upload would bring the dataset to {have}; the limit is {limit}."
    if exc.code == "zip_error":
        explanation = exc.extra.get("explanation")
        return f"The ZIP archive was refused: {explanation or exc.message}."
    if exc.code == "no_files":
        return "Choose image files or one ZIP archive to upload."
    return exc.message


def filter_images(images: Iterable[DatasetImage], image_class: str) -> list[DatasetImage]:
    if not image_class:
        return list(images)
    wanted = "" if image_class == "none" else image_class
    return [image for image in images if image.image_class == wanted]


def first_matching(images: Sequence[DatasetImage], image_class: str) -> DatasetImage | None:
    shown = filter_images(images, image_class)
    return shown[0] if shown else (images[0] if images else None)


# --- templates ---------------------------------------------------------------------------------------------


BROWSER_FORMATS = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


def browser_displayable(image: DatasetImage) -> bool:
    """Whether browsers draw the stored original as is (TIFF, for one, they do not)."""
    return image.file.name.lower().endswith(BROWSER_FORMATS)


def display_png(image: DatasetImage) -> bytes:
    return png_bytes(decode_stored_image(image.file).rgb)


def segment_json(preview) -> dict:
    """The canvas's answer: candidate masks best first, as 0/255 PNGs (base64) at the image's size."""
    return {
        "width": preview.width,
        "height": preview.height,
        "cached": preview.cached,
        "candidates": [
            {
                "score": round(float(candidate.score), 4),
                "area": int(candidate.area),
                "mask": b64encode(encode_mask_png(candidate.mask)),
            }
            for candidate in preview.candidates
        ],
    }


def tint(rgb: np.ndarray, mask: np.ndarray, colour=(47, 111, 237), alpha: float = 0.5) -> np.ndarray:
    """``rgb`` with ``mask`` painted over in ``colour`` (for thumbnails)."""
    out = rgb.astype(np.float32)
    out[mask] = out[mask] * (1 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def template_mask_png(template) -> bytes | None:
    """The reference image with the template's best mask tinted, as a small PNG (None: no reference)."""
    image = template.reference_image
    if image is None:
        return None
    points = parse_points(template.points)
    preview = segment_preview(image=image, points=points)
    if not preview.candidates:
        return None
    decoded = decode_stored_image(image.file)
    painted = tint(decoded.rgb, preview.candidates[0].mask)
    return png_bytes(make_thumbnail(painted, MASK_THUMB_SIDE))


def template_edit_rows(templates: Sequence) -> list[dict]:
    return [{"template": t, "rows": edit_rows(t.id.hex, t.default_edits)} for t in templates]


def preview_data_url(rgb: np.ndarray) -> str:
    """A JPEG data URL of the preview, scaled to fit PREVIEW_MAX_SIDE (small enough to send on every change)."""
    small = make_thumbnail(rgb, PREVIEW_MAX_SIDE)
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + b64encode(buffer.getvalue())


# --- jobs --------------------------------------------------------------------------------------------------


def job_progress(job: GenerationJob) -> dict:
    """Done/total, percent, images per second and time left of the current run."""
    total = job.total_items
    processed = job.processed_items
    percent = round(100 * processed / total) if total else (100 if job.is_terminal else 0)
    rate = None
    remaining_s = None
    elapsed_s = None
    if job.started_at:
        end = job.finished_at or timezone.now()
        elapsed_s = max(0.0, (end - job.started_at).total_seconds())
        done_this_run = JobItem.objects.filter(
            job=job, status__in=JobItem.DONE, updated__gte=job.started_at
        ).count()
        if elapsed_s > 0 and done_this_run:
            rate = done_this_run / elapsed_s
            if not job.is_terminal:
                remaining_s = (total - processed) / rate if rate else None
    return {
        "total": total,
        "processed": processed,
        "percent": percent,
        "rate": rate,
        "remaining_s": remaining_s,
        "elapsed_s": elapsed_s,
        "active": job.status in ACTIVE_STATUSES,
    }


def item_tiles(job: GenerationJob, items: Iterable[JobItem] | None = None) -> list[dict]:
    """One fixed-size tile per image of the job, with its variants (several in "each" mode)."""
    items = list(items if items is not None else job_items(job=job))
    image_ids = [item.image_id for item in items]
    variants: dict = defaultdict(list)
    for variant in variant_list_for_job(job=job).filter(image_id__in=image_ids):
        variants[variant.image_id].append(variant)
    return [{"item": item, "variants": variants.get(item.image_id, [])} for item in items]


def review_tiles(tiles: list[dict]) -> list[dict]:
    """The images with a quality flag (datasets.jobs.quality), in job order: their flagged variants and flags."""
    review = []
    for tile in tiles:
        flagged = [variant for variant in tile["variants"] if variant.flags]
        if flagged:
            flags = [flag for variant in flagged for flag in variant.flags]
            review.append({"item": tile["item"], "variants": flagged, "flags": flags})
    return review


def item_tile(job: GenerationJob, *, index: int) -> dict | None:
    items = list(job_items(job=job).filter(index=index))
    if not items:
        return None
    return item_tiles(job, items)[0]


def snapshot_rows(job: GenerationJob) -> list[dict]:
    """The templates a job ran with, and their non-neutral edits, for the parameters panel."""
    rows = []
    for snap in job.templates_snapshot or []:
        edits = snap.get("edits") or {}
        changed = [
            (name, edits[name])
            for name in EDIT_FIELDS
            if name in edits and edits[name] != NEUTRAL_VALUES[name]
        ]
        points = snap.get("points") or []
        rows.append(
            {
                "name": snap.get("name", ""),
                "image_class": snap.get("image_class", ""),
                "positive": sum(1 for p in points if p.get("positive", True)),
                "negative": sum(1 for p in points if not p.get("positive", True)),
                "edits": changed,
            }
        )
    return rows


def timing_rows(job: GenerationJob) -> list[tuple[str, int]]:
    timings = job.timings_ms or {}
    order = ["load", "decode", "embed", "predict", "edit", "encode", "store", "wall"]
    keys = [k for k in order if k in timings] + sorted(k for k in timings if k not in order)
    return [(key, round(float(timings[key]))) for key in keys]


def job_context(job: GenerationJob) -> dict:
    tiles = item_tiles(job)
    failed = [tile["item"] for tile in tiles if tile["item"].status == ItemStatus.FAILED]
    return {
        "review": review_tiles(tiles),
        "job": job,
        "progress": job_progress(job),
        "tiles": tiles,
        "failed_items": failed,
        "snapshot": snapshot_rows(job),
        "timings": timing_rows(job),
    }
