"""Turning models and service results into what the page templates show (no writes here).

Kept out of the views so they stay "parse, call one service, render", and shared with ``frontend.live``,
which renders the same job fragments for the SSE stream.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from django.utils import timezone
from PIL import Image

from datasets.image_io import decode_dataset_image
from datasets.jobs.services import job_queue_position
from datasets.models import Dataset, DatasetImage, GenerationJob, ItemStatus, JobItem, JobStatus
from datasets.selectors import (
    image_count_for_dataset,
    image_strips_for_datasets,
    job_count_for_dataset,
    job_item_at,
    job_items,
    job_items_done_count,
    variant_list_for_job_images,
)
from datasets.services.previews import image_display_png, segment_preview
from datasets.services.uploads import sanitize_filename
from imaging.codecs import b64encode, encode_mask_png, make_thumbnail
from imaging.edits import EDIT_FIELDS, NEUTRAL_VALUES
from imaging.pipeline import template_applies
from imaging.points import parse_points
from samsite.common.errors import ServiceError
from templates_app.selectors import template_count_for_dataset

from .forms import GenerateForm, edit_field_id, edit_rows

STRIP_SIZE = 6
PREVIEW_MAX_SIDE = 1024
MASK_THUMB_SIDE = 176
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


# --- segmenter names for people -------------------------------------------------------------------------

#: SAM's published image encoders, by the model type read from a checkpoint's tensors.
SAM_MODELS = {
    "vit_b": ("ViT-B", "base, 91 M parameters"),
    "vit_l": ("ViT-L", "large, 308 M parameters"),
    "vit_h": ("ViT-H", "huge, 636 M parameters"),
}


def sam_model_name(model_type: str | None) -> str:
    """ "SAM ViT-B", or "SAM (custom size)" for an architecture that is none of the published ones."""
    if model_type in SAM_MODELS:
        return f"SAM {SAM_MODELS[model_type][0]}"
    return "SAM (custom size)" if model_type else "SAM"


def segmenter_label(stored: str) -> str:
    """A job's recorded segmenter (``backend:model:fingerprint (label)``) as people say it: the recorded
    label ("MobileSAM", "SAM 2.1 hiera_t"), else "SAM ViT-B", "classical"."""
    # The fingerprint holds no space: the first " (" opens the label.
    record, _, label = (stored or "").partition(" (")
    backend, _, rest = record.partition(":")
    model = rest.partition(":")[0]
    if not backend:
        return ""
    if backend == "classical":
        return "classical"
    if label.endswith(")"):
        return label[:-1]
    if backend == "sam":
        return sam_model_name(None if model in ("", "-") else model)
    return backend


def segmenter_chip(status: dict) -> dict:
    """The header chip: what segments (family, size, device) in a few words, and its longer title."""
    if status.get("backend") == "sam":
        if not status.get("checkpoint"):
            return {
                "kind": "missing",
                "text": "SAM: no checkpoint found",
                "title": "SAM_BACKEND=sam needs a checkpoint",
            }
        if status.get("error"):
            return {
                "kind": "missing",
                "text": f"model unusable: {status['checkpoint']}",
                "title": str(status["error"])[:300],
            }
        # SAM 1 keeps its published names; the other families are named by their label (family and size).
        family = status.get("family")
        if family in (None, "sam") or not status.get("label"):
            name = sam_model_name(status.get("model"))
        else:
            name = status["label"]
        return {
            "kind": "sam",
            "text": f"{name} · {status.get('device') or 'cpu'}",
            "title": f"{name if family in (None, 'sam') else status['label']}, checkpoint {status['checkpoint']}",
        }
    return {
        "kind": "classical",
        "text": "classical segmenter (no SAM checkpoint)",
        "title": "A point-seeded classical segmenter: place a SAM checkpoint in models/ for SAM masks",
    }


# --- datasets ----------------------------------------------------------------------------------------------


def attach_thumbnail_strips(datasets: Sequence[Dataset]) -> None:
    """Set ``dataset.strip`` to its first few images (one query for all the cards)."""
    by_dataset = image_strips_for_datasets(datasets=datasets, size=STRIP_SIZE)
    for dataset in datasets:
        dataset.strip = by_dataset.get(dataset.id, [])


def workspace_context(dataset: Dataset, *, step: str) -> dict:
    """The header and step tabs of a dataset's pages."""
    return {
        "dataset": dataset,
        "step": step,
        "nav": "datasets",
        "image_count": image_count_for_dataset(dataset=dataset),
        "template_count": template_count_for_dataset(dataset=dataset),
        "job_count": job_count_for_dataset(dataset=dataset),
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


DUPLICATE_PREFIX = "duplicate: same content as "


def split_rejected(rejected: Sequence, created: Sequence = ()) -> tuple[list[dict], list]:
    """Upload refusals as (duplicates, the rest): a duplicate is a neutral skip, not an error the user must
    act on. Each duplicate is ``{filename, reason}``: a duplicate of another file of this upload (the upload
    service names the file it repeats, and that file is among ``created``) or of an image already in the
    dataset."""
    names = {image.filename for image in created}
    names |= {sanitize_filename(image.original_filename) for image in created if image.original_filename}
    duplicates = []
    for refusal in rejected:
        error = str(refusal.error)
        if not error.startswith("duplicate"):
            continue
        other = error[len(DUPLICATE_PREFIX) :] if error.startswith(DUPLICATE_PREFIX) else ""
        if other and other in names:
            reason = f"a duplicate of {other} in this upload (same content), skipped"
        else:
            reason = "already in the dataset (same content), skipped"
        duplicates.append({"filename": refusal.filename, "reason": reason})
    return duplicates, [r for r in rejected if not str(r.error).startswith("duplicate")]


def upload_summary(created: Sequence, duplicates: Sequence, rejected: Sequence) -> str:
    """ "Added 4 images, skipped 1 duplicate, rejected 1." (the parts that are not zero, after "Added")."""
    text = f"Added {len(created)} image{'' if len(created) == 1 else 's'}"
    if duplicates:
        text += f", skipped {len(duplicates)} duplicate{'' if len(duplicates) == 1 else 's'}"
    if rejected:
        text += f", rejected {len(rejected)}"
    return text + "."


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
    """The page's PNG of an image browsers cannot draw: stored once (``image_display_png``), then read."""
    return image_display_png(image=image)


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
    decoded = decode_dataset_image(image)
    painted = tint(decoded.rgb, preview.candidates[0].mask)
    return png_bytes(make_thumbnail(painted, MASK_THUMB_SIDE))


def template_edit_rows(templates: Sequence, *, grayscale: bool = False) -> list[dict]:
    """Slider rows per template; ``grayscale`` (every image of the dataset is) disables hue and saturation."""
    return [
        {"template": t, "rows": edit_rows(t.id.hex, t.default_edits, grayscale=grayscale)} for t in templates
    ]


def edit_field_ids(template) -> list[str]:
    """The element ids of a template's number boxes (their inline errors are ``<id>-error``)."""
    return [edit_field_id(template.id.hex, field) for field in EDIT_FIELDS]


def field_error(template, field: str, message: str) -> dict | None:
    """The inline error of one edit field, or None when the refusal names no edit field."""
    if field not in EDIT_FIELDS:
        return None
    return {"id": edit_field_id(template.id.hex, field), "message": message}


def variant_counts(images: Sequence[DatasetImage], templates: Sequence) -> dict:
    """What Generate makes in each compose mode: images, and variants (stack: one per image that some
    template applies to; each: one per applicable template), by the pipeline's own class rule."""
    per_image = [sum(1 for t in templates if template_applies(t.image_class, i.image_class)) for i in images]
    return {
        "images": len(images),
        "stack": sum(1 for n in per_image if n),
        "each": sum(per_image),
        "skipped": sum(1 for n in per_image if not n),
    }


GENERATE_SETTINGS_KEY = "generate-settings:{}"


def generate_settings(session, dataset: Dataset, last_job: GenerationJob | None) -> dict:
    """Compose, format and export-masks for the Generate card: what the user last chose on this dataset
    (session), else what its last job used, else the defaults."""
    stored = session.get(GENERATE_SETTINGS_KEY.format(dataset.id.hex))
    if isinstance(stored, dict):
        form = GenerateForm(stored)
        if form.is_valid():
            return dict(form.cleaned_data)
    if last_job is not None:
        return {
            "compose": last_job.compose,
            "output_format": last_job.output_format,
            "export_mask": last_job.export_mask,
        }
    return {"compose": "stack", "output_format": "png", "export_mask": False}


def generate_settings_store(session, dataset: Dataset, cleaned: dict) -> None:
    session[GENERATE_SETTINGS_KEY.format(dataset.id.hex)] = {
        "compose": cleaned["compose"],
        "output_format": cleaned["output_format"],
        "export_mask": "on" if cleaned["export_mask"] else "",
    }


def preview_data_url(rgb: np.ndarray) -> str:
    """A JPEG data URL of the preview, scaled to fit PREVIEW_MAX_SIDE (small enough to send on every change)."""
    small = make_thumbnail(rgb, PREVIEW_MAX_SIDE)
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + b64encode(buffer.getvalue())


OUTLINE_RGBA = (255, 214, 10, 255)


def outline_data_url(mask: np.ndarray) -> str:
    """The mask's outline at the preview's size as a transparent PNG (laid over the preview image).

    Mostly transparent pixels compress to a few kB, so it rides along with every preview.
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    small = make_thumbnail(m * 255, PREVIEW_MAX_SIDE) > 127
    padded = np.pad(small, 1, mode="constant")
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    edge = small & ~inner
    # Two pixels wide, so it stays visible when the browser scales the preview down.
    grown = edge.copy()
    grown[1:, :] |= edge[:-1, :]
    grown[:, 1:] |= edge[:, :-1]
    rgba = np.zeros((*small.shape, 4), dtype=np.uint8)
    rgba[grown] = OUTLINE_RGBA
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + b64encode(buffer.getvalue())


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
        done_this_run = job_items_done_count(job=job, since=job.started_at)
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
        "queue_position": job_queue_position(job),
    }


def item_tiles(job: GenerationJob, items: Iterable[JobItem] | None = None) -> list[dict]:
    """One fixed-size tile per image of the job, with its variants (several in "each" mode)."""
    items = list(items if items is not None else job_items(job=job))
    image_ids = [item.image_id for item in items]
    variants: dict = defaultdict(list)
    for variant in variant_list_for_job_images(job=job, image_ids=image_ids):
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
    item = job_item_at(job=job, index=index)
    if item is None:
        return None
    return item_tiles(job, [item])[0]


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
