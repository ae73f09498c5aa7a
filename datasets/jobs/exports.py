"""Training-ready exports of a job: COCO instance segmentation, YOLO segmentation, VOC class masks, masks.

``export_zip(job, fmt, exclude_flagged=...)`` reads the job's rows now (variants with their annotations,
failed items) and returns a ZipStream whose pixel work happens while it streams: images are copied from
storage in 64 KiB chunks, and each label file, class-index PNG or mask PNG is made from its annotation's RLE
when its entry is reached, so memory holds one image's masks at a time (plus the rows' compact RLE). The
archive is unsized (no Content-Length): its generated entries are not known before they are made.

What an export holds (``<stem>``: the image's name, ``__<template>`` added for "each" jobs, made unique):

* images: "stack" jobs: the stacked variant of each image; "each": one image per variant (its annotation is
  that template's mask); "annotate": the original images. Stored as they are (PNG/JPEG/WebP).
* categories: the dataset's template labels, numbered from 1 in the order the templates were saved (first
  use), then any label only this job's snapshot has; every export lists all of them, so ids are stable
  across the dataset's jobs. YOLO class ids are ``id - 1``; VOC pixel values are the ids.
* ``coco``: ``annotations.json`` (``images`` with ``file_name`` relative to ``images/``, width, height;
  ``categories``; one annotation per (image, template) with ``segmentation`` as compressed RLE from
  pycocotools, ``area``, ``bbox`` [x, y, w, h], ``iscrowd`` 0, ``score`` (SAM's predicted IoU), plus
  ``stability`` and ``flags``) and ``images/``.
* ``yolo``: Ultralytics segmentation layout: ``images/``, ``labels/<stem>.txt`` with one
  ``<class> x1 y1 ... xn yn`` line per polygon (normalised; a mask in several parts gives several lines,
  holes are bridged into their outer polygon, >= 3 points each), ``data.yaml`` (``path``, ``train``, ``val``,
  ``nc``, ``names``).
* ``voc``: ``JPEGImages/`` (the images, in their own format), ``SegmentationClass/<stem>.png`` (palette PNG:
  0 background, the category id where a mask covers the pixel, 255 "void" where masks of different labels
  overlap), ``ImageSets/Segmentation/default.txt`` and ``labelmap.txt``.
* ``masks``: ``masks/<stem>__<template>.png``, one binary (0/255) PNG per (image, template).
* always ``README.txt``: the layout, the categories, the failed items left out, and (``exclude_flagged``) the
  flagged annotations left out.

Empty masks are never exported as annotations (nothing to learn from; they are flagged ``empty``). With
``exclude_flagged`` every annotation with a quality flag is left out, and so is an image left with none (it
would teach "no object here" where the object may well be).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from PIL import Image
from zipstream import ZIP_STORED, ZipStream

from datasets.jobs.downloads import _variant_base_name, file_chunks, job_file_stem, stream_response
from datasets.models import ComposeMode, GenerationJob, ItemStatus
from datasets.services.names import safe_name_part, unique_entry_name
from imaging.annotations import rle_decode, yolo_lines
from imaging.codecs import FORMAT_EXTENSIONS, encode_mask_png

EXPORT_FORMATS = ("coco", "yolo", "voc", "masks")
#: VOC class masks are 8-bit: 0 is background and 255 void, so at most 254 categories.
MAX_VOC_CATEGORIES = 254


class ExportError(ValueError):
    """An export that cannot be made (``code`` for the API's error body)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class ExportAnnotation:
    template_id: str
    template_name: str
    category_id: int
    record: dict  # the Variant.annotations entry: label, score, stability, area, bbox, rle, flags
    mask_storage_name: str = ""  # the stored PNG when it is exactly this annotation's mask (each/annotate)


@dataclass
class ExportImage:
    stem: str
    ext: str
    storage_name: str
    width: int
    height: int
    annotations: list[ExportAnnotation] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        return f"{self.stem}.{self.ext}"


@dataclass
class ExportPlan:
    """Everything an export needs, read from the database before streaming starts."""

    job: GenerationJob
    categories: list[dict]
    images: list[ExportImage]
    failed: list[tuple[str, str]]
    left_out: list[tuple[str, str, str]]  # (file, label, flag codes) of the flagged annotations left out
    exclude_flagged: bool


def job_categories(job: GenerationJob) -> list[dict]:
    """``[{"id", "name"}]``: the dataset's labels by first use in save order, then the job's own leftovers."""
    names: list[str] = []
    for label, name in job.dataset.templates.order_by("position", "created").values_list("label", "name"):
        effective = label or name
        if effective not in names:
            names.append(effective)
    for snapshot in job.templates_snapshot or []:
        effective = snapshot.get("label") or snapshot["name"]
        if effective not in names:
            names.append(effective)
    return [{"id": index, "name": name} for index, name in enumerate(names, start=1)]


def _image_ext(name: str) -> str:
    return (PurePosixPath(name).suffix.lower().lstrip(".") or "png")[:10]


def export_plan(job: GenerationJob, *, exclude_flagged: bool = False) -> ExportPlan:
    categories = job_categories(job)
    category_of = {c["name"]: c["id"] for c in categories}
    snapshot = job.templates_snapshot or []
    order = {t["template_id"]: index for index, t in enumerate(snapshot)}
    names = {t["template_id"]: t["name"] for t in snapshot}
    variants = sorted(
        job.variants.select_related("image"),
        key=lambda v: (v.image.position, order.get(v.template_key, -1), v.template_key),
    )
    annotate = job.compose == ComposeMode.ANNOTATE
    ext = FORMAT_EXTENSIONS[job.output_format]
    taken: set[str] = set()
    images: list[ExportImage] = []
    by_image: dict = {}
    left_out: list[tuple[str, str, str]] = []
    for variant in variants:
        if annotate:
            image = by_image.get(variant.image_id)
            if image is None:
                original = variant.image
                stem = safe_name_part(PurePosixPath(original.filename).stem, "image")
                image_ext = _image_ext(original.filename)
                unique = unique_entry_name(stem, image_ext, taken)
                image = ExportImage(
                    stem=unique[: -len(image_ext) - 1],
                    ext=image_ext,
                    storage_name=original.file.name,
                    width=original.width,
                    height=original.height,
                )
                by_image[variant.image_id] = image
                images.append(image)
        else:
            if not variant.file:
                continue
            unique = unique_entry_name(_variant_base_name(variant.image.filename, variant, job), ext, taken)
            image = ExportImage(
                stem=unique[: -len(ext) - 1],
                ext=ext,
                storage_name=variant.file.name,
                width=variant.width,
                height=variant.height,
            )
            images.append(image)
        single = len(variant.annotations or []) == 1 and job.compose != ComposeMode.STACK
        for record in variant.annotations or []:
            if exclude_flagged and record.get("flags"):
                codes = ",".join(f["code"] for f in record["flags"])
                left_out.append((image.file_name, record["label"], codes))
                continue
            image.annotations.append(
                ExportAnnotation(
                    template_id=record["template_id"],
                    template_name=names.get(record["template_id"], record["label"]),
                    category_id=category_of[record["label"]],
                    record=record,
                    mask_storage_name=variant.mask_file.name if single and variant.mask_file else "",
                )
            )
    if exclude_flagged:
        flagged_files = {file for file, _, _ in left_out}
        images = [i for i in images if i.annotations or i.file_name not in flagged_files]
    failed = [
        (item.image.filename, item.error)
        for item in job.items.filter(status=ItemStatus.FAILED).select_related("image").order_by("index")
    ]
    return ExportPlan(job, categories, images, failed, left_out, exclude_flagged)


def _lazy(make: Callable[[], bytes]) -> Iterator[bytes]:
    """An entry whose bytes are made only when the stream reaches it."""
    yield make()


def _trainable(image: ExportImage) -> list[ExportAnnotation]:
    return [a for a in image.annotations if a.record.get("area", 0) > 0]


# --- COCO ----------------------------------------------------------------------------------------------


def coco_document(plan: ExportPlan) -> dict:
    images, annotations = [], []
    for image_id, image in enumerate(plan.images, start=1):
        images.append(
            {"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height}
        )
        for a in _trainable(image):
            record = a.record
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": a.category_id,
                    "segmentation": {"size": list(record["rle"]["size"]), "counts": record["rle"]["counts"]},
                    "area": int(record["area"]),
                    "bbox": [float(v) for v in record["bbox"]],
                    "iscrowd": 0,
                    "score": record["score"],
                    "stability": record.get("stability"),
                    "flags": [f["code"] for f in record.get("flags", [])],
                }
            )
    return {
        "info": {
            "description": f"{plan.job.dataset.name}: job {plan.job.id.hex} ({plan.job.compose})",
            "version": "1.0",
            "date_created": plan.job.created.isoformat(),
        },
        "licenses": [],
        "images": images,
        "categories": [{**c, "supercategory": "object"} for c in plan.categories],
        "annotations": annotations,
    }


# --- YOLO ----------------------------------------------------------------------------------------------


def yolo_label_text(image: ExportImage) -> bytes:
    lines = []
    for a in _trainable(image):
        lines.extend(yolo_lines(rle_decode(a.record["rle"]), a.category_id - 1))
    return ("\n".join(lines) + ("\n" if lines else "")).encode("ascii")


def yolo_data_yaml(plan: ExportPlan) -> bytes:
    names = "\n".join(
        f"  {c['id'] - 1}: {json.dumps(c['name'], ensure_ascii=False)}" for c in plan.categories
    )
    return (
        "# Ultralytics YOLO segmentation dataset (one split: train and val both point at images/)\n"
        f"path: .\ntrain: images\nval: images\nnc: {len(plan.categories)}\nnames:\n{names}\n"
    ).encode()


# --- VOC -----------------------------------------------------------------------------------------------


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (index i's colour from its bits), with 255 the VOC void colour."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.extend((r, g, b))
    palette[255 * 3 : 256 * 3] = [224, 224, 192]
    return palette


VOID = 255


def voc_class_mask(image: ExportImage) -> np.ndarray:
    """``H x W`` uint8: 0 background, the category id under each mask, 255 where different labels overlap."""
    out = np.zeros((image.height, image.width), dtype=np.uint8)
    for a in _trainable(image):
        mask = rle_decode(a.record["rle"])
        fresh = mask & (out == 0)
        clash = mask & (out != 0) & (out != a.category_id)
        out[fresh] = a.category_id
        out[clash] = VOID
    return out


def voc_png(image: ExportImage, palette: list[int]) -> bytes:
    pil = Image.fromarray(voc_class_mask(image), mode="P")
    pil.putpalette(palette)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def voc_labelmap(plan: ExportPlan, palette: list[int]) -> bytes:
    rows = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    for c in plan.categories:
        r, g, b = palette[c["id"] * 3 : c["id"] * 3 + 3]
        rows.append(f"{c['name']}:{r},{g},{b}::")
    return ("\n".join(rows) + "\n").encode("utf-8")


# --- The archive ---------------------------------------------------------------------------------------


def readme_text(plan: ExportPlan, fmt: str) -> bytes:
    job = plan.job
    lines = [
        f"Export '{fmt}' of job {job.id.hex} ({job.compose}) on dataset '{job.dataset.name}'",
        f"made {timezone.now().isoformat()} by the SAM Bulk Dataset Generator.",
        "",
        f"Images: {len(plan.images)}; annotations: {sum(len(_trainable(i)) for i in plan.images)}.",
        "Categories (id: name; YOLO class = id - 1; VOC pixel value = id, 0 background, 255 void):",
        *(f"  {c['id']}: {c['name']}" for c in plan.categories),
        "",
    ]
    if plan.failed:
        lines.append(f"Failed images, left out ({len(plan.failed)}):")
        lines.extend(f"  {name}: {error}" for name, error in plan.failed)
    else:
        lines.append("Failed images: none.")
    if plan.exclude_flagged:
        lines.append("")
        lines.append(f"Flagged annotations left out ({len(plan.left_out)}):")
        lines.extend(f"  {file} [{label}]: {codes}" for file, label, codes in plan.left_out)
    return ("\n".join(lines) + "\n").encode("utf-8")


def export_zip(job: GenerationJob, fmt: str, *, exclude_flagged: bool = False) -> ZipStream:
    """The export archive, ready to stream (see the module docstring). Raises ExportError."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError("invalid_format", f"format must be one of {', '.join(EXPORT_FORMATS)}")
    plan = export_plan(job, exclude_flagged=exclude_flagged)
    if fmt == "voc" and len(plan.categories) > MAX_VOC_CATEGORIES:
        raise ExportError("too_many_labels", f"VOC class masks hold at most {MAX_VOC_CATEGORIES} labels")
    archive = ZipStream(compress_type=ZIP_STORED, sized=False)
    archive.add(readme_text(plan, fmt), "README.txt")
    if fmt == "coco":
        for image in plan.images:
            archive.add(file_chunks(image.storage_name), f"images/{image.file_name}")
        document = coco_document(plan)
        archive.add(json.dumps(document, ensure_ascii=False).encode("utf-8"), "annotations.json")
    elif fmt == "yolo":
        archive.add(yolo_data_yaml(plan), "data.yaml")
        for image in plan.images:
            archive.add(file_chunks(image.storage_name), f"images/{image.file_name}")
            archive.add(_lazy(lambda image=image: yolo_label_text(image)), f"labels/{image.stem}.txt")
    elif fmt == "voc":
        palette = voc_palette()
        archive.add(voc_labelmap(plan, palette), "labelmap.txt")
        stems = "".join(f"{image.stem}\n" for image in plan.images).encode("utf-8")
        archive.add(stems, "ImageSets/Segmentation/default.txt")
        for image in plan.images:
            archive.add(file_chunks(image.storage_name), f"JPEGImages/{image.file_name}")
            archive.add(
                _lazy(lambda image=image: voc_png(image, palette)), f"SegmentationClass/{image.stem}.png"
            )
    else:
        taken: set[str] = set()
        for image in plan.images:
            for a in image.annotations:
                if job.compose == ComposeMode.EACH:
                    base = f"masks/{image.stem}"  # the variant's name already carries the template's
                else:
                    base = f"masks/{image.stem}__{safe_name_part(a.template_name, 'template')}"
                arcname = unique_entry_name(base, "png", taken)
                if a.mask_storage_name:
                    archive.add(file_chunks(a.mask_storage_name), arcname)
                else:
                    archive.add(_lazy(lambda a=a: encode_mask_png(rle_decode(a.record["rle"]))), arcname)
    return archive


def export_filename(job: GenerationJob, fmt: str) -> str:
    return f"{job_file_stem(job)}-{fmt}.zip"


def export_response(
    request: HttpRequest, job: GenerationJob, fmt: str, *, exclude_flagged: bool = False
) -> StreamingHttpResponse:
    archive = export_zip(job, fmt, exclude_flagged=exclude_flagged)
    return stream_response(
        request, archive, content_type="application/zip", size=None, filename=export_filename(job, fmt)
    )
