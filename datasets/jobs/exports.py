"""Training-ready exports of a job: COCO instance segmentation, YOLO segmentation, VOC class masks, masks.

``export_zip(job, fmt, exclude_flagged=...)`` plans now (the variants' ids, names and sizes, never their
annotations; the failed and unprocessed items) and returns the archive's bytes as an iterator: entries are
added ``ANNOTATION_CHUNK_IMAGES`` images at a time as the stream reaches them, each chunk's annotations read in
one query then, images are copied from storage in 64 KiB chunks, and each label file, class-index PNG or mask
PNG is made from its annotation's RLE when its entry is reached; ``annotations.json`` is written incrementally
(images, categories, then the annotations chunk by chunk). Memory holds one chunk's RLE. The archive is unsized
(no Content-Length); ``README.txt`` is its last entry (it counts what was streamed).

What an export holds (``<stem>``: the image's name, ``__<template>`` added for "each" jobs, made unique as a
stem whatever the extension, so ``photo.png`` and ``photo.jpg`` become ``photo`` and ``photo-2``):

* images: "stack" jobs: the stacked variant of each image; "each": one image per variant (its annotation is
  that template's mask); "annotate": the original images, stored as they are unless their EXIF orientation
  is not 1 (then re-encoded upright in their own format, the frame the masks are in).
* categories: the dataset's label registry (``Dataset.labels``: each label numbered from 1 on first use,
  never renumbered or reused), then any label only this job's snapshot has; every export lists all of them,
  so ids are stable across the dataset's jobs and template edits. YOLO class ids are ``id - 1``; VOC pixel
  values are the ids. Each image's annotations follow the job snapshot's template order.
* ``coco``: ``annotations.json`` (``images`` with ``file_name`` relative to ``images/``, width, height;
  ``categories``; one annotation per (image, template) with ``segmentation`` as compressed RLE from
  pycocotools, ``area``, ``bbox`` [x, y, w, h], ``iscrowd`` 0, ``score`` (SAM's predicted IoU), plus
  ``stability`` and ``flags``) and ``images/``.
* ``yolo``: Ultralytics segmentation layout: ``images/``, ``labels/<stem>.txt`` with one
  ``<class> x1 y1 ... xn yn`` line per polygon (normalised; a mask in several parts gives several lines,
  holes are bridged into their outer polygon, >= 3 points each), ``data.yaml`` (``train``, ``val``, ``nc``,
  ``names``; no ``path``, so Ultralytics resolves ``images`` beside the yaml).
* ``voc``: ``JPEGImages/`` (the images, in their own format), ``SegmentationClass/<stem>.png`` (palette PNG:
  0 background, the category id where a mask covers the pixel, 255 "void" where masks of different labels
  overlap), ``ImageSets/Segmentation/default.txt`` and ``labelmap.txt``.
* ``masks``: ``masks/<stem>__<template>.png``, one binary (0/255) PNG per (image, template).
* always ``README.txt``: the layout, the categories, the failed items left out, the items a running or
  cancelled job has not processed, and (``exclude_flagged``) the flagged annotations left out.

Jobs finished before per-template annotations (``annotations == []``): an each/annotate variant's annotation is
made from its stored mask PNG; ``masks`` copies every stored mask; a stack variant holds only the union of its
masks, so coco/yolo/voc refuse such a job (ServiceError ``export_unavailable``, 409).

Empty masks are never exported as annotations (nothing to learn from; they are flagged ``empty``). With
``exclude_flagged`` every annotation with a quality flag is left out, and so is an image left with none (it
would teach "no object here" where the object may well be).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
from django.core.files.storage import default_storage
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from PIL import Image
from zipstream import ZIP_STORED, ZipStream

from datasets.jobs.downloads import (
    CHUNK_SIZE,
    _variant_base_name,
    file_chunks,
    job_file_stem,
    stream_response,
)
from datasets.jobs.quality import snapshot_labels
from datasets.models import STACK_TEMPLATE_KEY, ComposeMode, Dataset, GenerationJob, ItemStatus, Variant
from datasets.services.names import safe_name_part, unique_entry_name
from imaging.annotations import rle_area, rle_bbox, rle_decode, rle_encode, yolo_lines
from imaging.codecs import FORMAT_EXTENSIONS, decode_image, decode_mask_png, encode_image, encode_mask_png
from samsite.common.errors import ServiceError

EXPORT_FORMATS = ("coco", "yolo", "voc", "masks")
#: VOC class masks are 8-bit: 0 is background and 255 void, so at most 254 categories.
MAX_VOC_CATEGORIES = 254
#: Images whose annotations are read from the database in one query while the archive streams.
ANNOTATION_CHUNK_IMAGES = 64
#: EXIF tag of the orientation; 1 is upright.
EXIF_ORIENTATION = 0x0112
#: Original extensions an upright copy can be re-encoded in (its own format).
_REENCODABLE = frozenset({"png", "jpg", "jpeg", "webp"})


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
    record: dict | None  # the Variant.annotations entry: label, score, stability, area, bbox, rle, flags
    mask_storage_name: str = ""  # the stored PNG when it is exactly this annotation's mask (each/annotate)


@dataclass(frozen=True)
class VariantRef:
    """What the plan keeps of a variant: no annotations (they are read per chunk while streaming)."""

    id: uuid.UUID
    template_key: str
    template_name: str
    mask_name: str
    score: float
    stability: float | None
    legacy: bool  # stored before per-template annotations (annotations == []): only its mask file tells


@dataclass
class ExportImage:
    id: int  # the COCO image id: position in the export, from 1
    stem: str  # unique in the export whatever the extension (labels/<stem>.txt, SegmentationClass/<stem>.png)
    ext: str
    storage_name: str
    width: int
    height: int
    variants: list[VariantRef] = field(default_factory=list)
    original: bool = False  # an annotate job's uploaded original: exported upright (EXIF orientation applied)
    annotations: list[ExportAnnotation] = field(default_factory=list)  # filled for its chunk only

    @property
    def file_name(self) -> str:
        return f"{self.stem}.{self.ext}"


@dataclass
class ExportPlan:
    """What an export needs before streaming: ids, names and sizes (annotations are read as it streams)."""

    job: GenerationJob
    categories: list[dict]
    images: list[ExportImage]
    failed: list[tuple[str, str]]
    left_out: list[tuple[str, str, str]]  # (file, label, flag codes) of the flagged annotations left out
    exclude_flagged: bool
    unprocessed: list[str] = field(default_factory=list)  # items not run (yet): a running/cancelled job
    category_of: dict[str, int] = field(default_factory=dict)
    template_order: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # template id -> the label the job ran with
    template_names: dict[str, str] = field(default_factory=dict)  # template id -> its snapshot name
    annotation_count: int = 0  # trainable annotations streamed so far


def job_categories(job: GenerationJob) -> list[dict]:
    """``[{"id", "name"}]``: the dataset's label registry (``Dataset.labels``, ids fixed on first use, never
    renumbered), then any label of the job's snapshot the registry lacks (a template written around the
    template services); every export lists them all."""
    names = list(Dataset.objects.filter(pk=job.dataset_id).values_list("labels", flat=True).get() or [])
    for snapshot in job.templates_snapshot or []:
        effective = snapshot.get("label") or snapshot["name"]
        if effective not in names:
            names.append(effective)
    return [{"id": index, "name": name} for index, name in enumerate(names, start=1)]


def _image_ext(name: str) -> str:
    return (PurePosixPath(name).suffix.lower().lstrip(".") or "png")[:10]


_PLAN_FIELDS = (
    "id",
    "image_id",
    "template_key",
    "template_names",
    "template_ids",
    "file",
    "mask_file",
    "width",
    "height",
    "score",
    "stability",
    "flags",
    "image__filename",
    "image__file",
    "image__width",
    "image__height",
)


def _image_variant_rows(job: GenerationJob) -> Iterator[list[dict]]:
    """The job's variant rows (no annotations) grouped per image, images in position order, each image's
    variants in the snapshot's template order."""
    order = {t["template_id"]: index for index, t in enumerate(job.templates_snapshot or [])}
    rows = job.variants.order_by("image__position", "template_key").values(*_PLAN_FIELDS)
    group: list[dict] = []
    for row in rows.iterator(chunk_size=2000):
        if group and group[0]["image_id"] != row["image_id"]:
            yield sorted(group, key=lambda r: (order.get(r["template_key"], -1), r["template_key"]))
            group = []
        group.append(row)
    if group:
        yield sorted(group, key=lambda r: (order.get(r["template_key"], -1), r["template_key"]))


def export_plan(job: GenerationJob, *, exclude_flagged: bool = False) -> ExportPlan:
    categories = job_categories(job)
    snapshot = job.templates_snapshot or []
    names = {t["template_id"]: t["name"] for t in snapshot}
    annotate = job.compose == ComposeMode.ANNOTATE
    ext = FORMAT_EXTENSIONS[job.output_format]
    legacy = set(job.variants.filter(annotations=[]).values_list("pk", flat=True))
    taken: set[str] = set()
    images: list[ExportImage] = []
    left_out: list[tuple[str, str, str]] = []

    def ref(row: dict) -> VariantRef:
        key = row["template_key"]
        name = names.get(key) or (row["template_names"][0] if row["template_names"] else key)
        return VariantRef(
            id=row["id"],
            template_key=key,
            template_name=name,
            mask_name=row["mask_file"] or "",
            score=float(row["score"]),
            stability=row["stability"],
            legacy=row["id"] in legacy,
        )

    def place(image: ExportImage, rows: list[dict]) -> None:
        """Keep the image unless ``exclude_flagged`` leaves every one of its annotations out."""
        kept = flagged = 0
        for row in rows:
            codes: dict[str, list[str]] = {}
            labels: dict[str, str] = {}
            for flag in row["flags"] or []:
                codes.setdefault(flag["template_id"], []).append(flag["code"])
                labels.setdefault(flag["template_id"], flag["label"])
            if exclude_flagged:
                for template_id, flag_codes in codes.items():
                    left_out.append((image.file_name, labels[template_id], ",".join(flag_codes)))
                flagged += len(codes)
            kept += len([t for t in row["template_ids"] or [row["template_key"]] if t not in codes])
        if not (exclude_flagged and flagged and not kept):
            image.id = len(images) + 1
            images.append(image)

    for rows in _image_variant_rows(job):
        first = rows[0]
        if annotate:
            stem = safe_name_part(PurePosixPath(first["image__filename"]).stem, "image")
            image = ExportImage(
                id=0,
                stem=unique_entry_name(stem, "", taken),
                ext=_image_ext(first["image__filename"]),
                storage_name=first["image__file"],
                width=first["image__width"],
                height=first["image__height"],
                variants=[ref(row) for row in rows],
                original=True,
            )
            place(image, rows)
            continue
        for row in rows:
            if not row["file"]:
                continue
            variant = ref(row)
            base = _variant_base_name(first["image__filename"], _NamedVariant(row), job)
            image = ExportImage(
                id=0,
                stem=unique_entry_name(base, "", taken),
                ext=ext,
                storage_name=row["file"],
                width=row["width"],
                height=row["height"],
                variants=[variant],
            )
            place(image, [row])
    failed = [
        (item.image.filename, item.error)
        for item in job.items.filter(status=ItemStatus.FAILED).select_related("image").order_by("index")
    ]
    unprocessed = list(
        job.items.filter(status__in=[ItemStatus.PENDING, ItemStatus.RUNNING])
        .order_by("index")
        .values_list("image__filename", flat=True)
    )
    return ExportPlan(
        job,
        categories,
        images,
        failed,
        left_out,
        exclude_flagged,
        unprocessed=unprocessed,
        category_of={c["name"]: c["id"] for c in categories},
        template_order={t["template_id"]: index for index, t in enumerate(snapshot)},
        labels=snapshot_labels(job),
        template_names=names,
    )


@dataclass(frozen=True)
class _NamedVariant:
    """The two fields ``_variant_base_name`` reads, from a plan row."""

    row: dict

    @property
    def template_key(self) -> str:
        return self.row["template_key"]

    @property
    def template_names(self) -> list[str]:
        return self.row["template_names"] or []


def _stored_mask_record(plan: ExportPlan, image: ExportImage, variant: VariantRef) -> dict | None:
    """The annotation of a variant stored before per-template annotations, made from its stored mask PNG
    (each/annotate variants carry exactly one template's mask); None when the mask cannot be read."""
    if not variant.mask_name:
        return None
    try:
        with default_storage.open(variant.mask_name, "rb") as handle:
            mask = decode_mask_png(handle.read(), expected_size=(image.width, image.height))
    except Exception:
        return None
    rle = rle_encode(mask)
    return {
        "template_id": variant.template_key,
        "label": plan.labels.get(variant.template_key, variant.template_name),
        "score": variant.score,
        "stability": variant.stability,
        "area": rle_area(rle),
        "bbox": rle_bbox(rle),
        "rle": rle,
        "flags": [],
    }


def _fill_annotations(plan: ExportPlan, images: list[ExportImage]) -> None:
    """Read the annotations of ``images`` (one query) into ``image.annotations``, in the job snapshot's
    template order, leaving out flagged ones when the plan excludes them."""
    wanted = [v.id for image in images for v in image.variants if not v.legacy]
    stored = dict(Variant.objects.filter(pk__in=wanted).values_list("pk", "annotations")) if wanted else {}
    order = plan.template_order
    for image in images:
        annotations: list[ExportAnnotation] = []
        for variant in image.variants:
            if variant.legacy:
                if variant.template_key == STACK_TEMPLATE_KEY:
                    # Only ``masks`` gets here (the others refuse such a job): the stored union mask.
                    annotations.append(ExportAnnotation("", "", 0, None, variant.mask_name))
                    continue
                record = _stored_mask_record(plan, image, variant)
                records = [record] if record else []
            else:
                records = sorted(stored.get(variant.id) or [], key=lambda r: order.get(r["template_id"], -1))
            single = len(records) == 1 and variant.template_key != STACK_TEMPLATE_KEY
            for record in records:
                if plan.exclude_flagged and record.get("flags"):
                    continue
                annotations.append(
                    ExportAnnotation(
                        template_id=record["template_id"],
                        template_name=variant.template_name
                        if single
                        else plan.template_names.get(record["template_id"], record["label"]),
                        category_id=plan.category_of[record["label"]],
                        record=record,
                        mask_storage_name=variant.mask_name if single else "",
                    )
                )
        image.annotations = annotations
        plan.annotation_count += len(_trainable(image))


def annotation_chunks(plan: ExportPlan) -> Iterator[list[ExportImage]]:
    """The plan's images, ``ANNOTATION_CHUNK_IMAGES`` at a time, with their annotations read for that chunk
    only (and dropped once the caller moves on): memory holds one chunk's RLE."""
    for start in range(0, len(plan.images), ANNOTATION_CHUNK_IMAGES):
        chunk = plan.images[start : start + ANNOTATION_CHUNK_IMAGES]
        _fill_annotations(plan, chunk)
        yield chunk
        for image in chunk:
            image.annotations = []


def _lazy(make: Callable[[], bytes]) -> Iterator[bytes]:
    """An entry whose bytes are made only when the stream reaches it."""
    yield make()


def _trainable(image: ExportImage) -> list[ExportAnnotation]:
    return [a for a in image.annotations if a.record is not None and a.record.get("area", 0) > 0]


def exif_orientation(handle) -> int:
    """The EXIF orientation of an open image file (1 when it has none or it cannot be read)."""
    try:
        with Image.open(handle) as pil:
            return int(pil.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:
        return 1


def upright_chunks(storage_name: str, ext: str) -> Iterator[bytes]:
    """An original's bytes as they are, unless its EXIF orientation is not 1: then re-encoded upright in its
    own format (pixels rotated as decoding rotates them, so as the masks' frame; no orientation left), so
    loaders that ignore EXIF see the width and height the annotations have."""
    with default_storage.open(storage_name, "rb") as handle:
        if ext not in _REENCODABLE or exif_orientation(handle) == 1:
            handle.seek(0)
            while data := handle.read(CHUNK_SIZE):
                yield data
            return
        handle.seek(0)
        data = handle.read()
    yield encode_image(decode_image(data).rgb, ext)


def image_chunks(image: ExportImage) -> Iterator[bytes]:
    return (
        upright_chunks(image.storage_name, image.ext) if image.original else file_chunks(image.storage_name)
    )


# --- COCO ----------------------------------------------------------------------------------------------


def _coco_annotation(image: ExportImage, a: ExportAnnotation, annotation_id: int) -> dict:
    record = a.record
    return {
        "id": annotation_id,
        "image_id": image.id,
        "category_id": a.category_id,
        "segmentation": {"size": list(record["rle"]["size"]), "counts": record["rle"]["counts"]},
        "area": int(record["area"]),
        "bbox": [float(v) for v in record["bbox"]],
        "iscrowd": 0,
        "score": record["score"],
        "stability": record.get("stability"),
        "flags": [f["code"] for f in record.get("flags", [])],
    }


def coco_chunks(plan: ExportPlan) -> Iterator[bytes]:
    """``annotations.json``, written as it streams: the ``info``, the ``images`` (from the plan), the
    ``categories``, then the ``annotations`` read one chunk of images at a time. The bytes are those of
    ``json.dumps`` of the whole document (same keys, order and separators), so the file is deterministic."""

    def dumps(value) -> str:
        return json.dumps(value, ensure_ascii=False)

    info = {
        "description": f"{plan.job.dataset.name}: job {plan.job.id.hex} ({plan.job.compose})",
        "version": "1.0",
        "date_created": plan.job.created.isoformat(),
    }
    yield f'{{"info": {dumps(info)}, "licenses": [], "images": ['.encode()
    for start in range(0, len(plan.images), ANNOTATION_CHUNK_IMAGES):
        entries = [
            dumps({"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height})
            for i in plan.images[start : start + ANNOTATION_CHUNK_IMAGES]
        ]
        yield ((", " if start else "") + ", ".join(entries)).encode("utf-8")
    categories = [{**c, "supercategory": "object"} for c in plan.categories]
    yield f'], "categories": {dumps(categories)}, "annotations": ['.encode()
    count = 0
    for chunk in annotation_chunks(plan):
        entries = []
        for image in chunk:
            for a in _trainable(image):
                count += 1
                entries.append(dumps(_coco_annotation(image, a, count)))
        if entries:
            yield ((", " if count > len(entries) else "") + ", ".join(entries)).encode("utf-8")
    yield b"]}"


def coco_document(plan: ExportPlan) -> dict:
    """The whole COCO document as a dict (tests, small jobs): what :func:`coco_chunks` streams."""
    return json.loads(b"".join(coco_chunks(plan)))


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
        f"train: images\nval: images\nnc: {len(plan.categories)}\nnames:\n{names}\n"
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
    """The archive's README (its last entry, so it can count the annotations streamed before it)."""
    job = plan.job
    lines = [
        f"Export '{fmt}' of job {job.id.hex} ({job.compose}) on dataset '{job.dataset.name}'",
        f"made {timezone.now().isoformat()} by the SAM Bulk Dataset Generator.",
        "",
        f"Images: {len(plan.images)}; annotations: {plan.annotation_count}.",
        "Categories (id: name; YOLO class = id - 1; VOC pixel value = id, 0 background, 255 void):",
        *(f"  {c['id']}: {c['name']}" for c in plan.categories),
        "",
    ]
    if plan.failed:
        lines.append(f"Failed images, left out ({len(plan.failed)}):")
        lines.extend(f"  {name}: {error}" for name, error in plan.failed)
    else:
        lines.append("Failed images: none.")
    if plan.unprocessed:
        lines.append("")
        lines.append(f"Images not processed (job {job.status}), left out ({len(plan.unprocessed)}):")
        lines.extend(f"  {name}" for name in plan.unprocessed)
    if plan.exclude_flagged:
        lines.append("")
        lines.append(f"Flagged annotations left out ({len(plan.left_out)}):")
        lines.extend(f"  {file} [{label}]: {codes}" for file, label, codes in plan.left_out)
    return ("\n".join(lines) + "\n").encode("utf-8")


UNAVAILABLE_DETAIL = "this job predates per-template annotations; run it again"


def export_zip(job: GenerationJob, fmt: str, *, exclude_flagged: bool = False) -> Iterator[bytes]:
    """The export archive's bytes, as an iterator to stream (see the module docstring). Checks and plans now
    (ExportError; ServiceError("export_unavailable", 409) for a stack job stored before per-template
    annotations, whose layered variants keep only the union of their masks); reads the annotations while
    it streams."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError("invalid_format", f"format must be one of {', '.join(EXPORT_FORMATS)}")
    plan = export_plan(job, exclude_flagged=exclude_flagged)
    if fmt == "voc" and len(plan.categories) > MAX_VOC_CATEGORIES:
        raise ExportError("too_many_labels", f"VOC class masks hold at most {MAX_VOC_CATEGORIES} labels")
    if fmt != "masks" and any(
        v.legacy and v.template_key == STACK_TEMPLATE_KEY for image in plan.images for v in image.variants
    ):
        raise ServiceError("export_unavailable", UNAVAILABLE_DETAIL, status=409)
    return _archive_chunks(plan, fmt)


def _archive_chunks(plan: ExportPlan, fmt: str) -> Iterator[bytes]:
    """Entries are added one chunk of images at a time, as the stream reaches them (zipstream-ng takes
    entries while it streams), so only that chunk's annotations are in memory."""
    archive = ZipStream(compress_type=ZIP_STORED, sized=False)
    if fmt == "coco":
        for image in plan.images:
            archive.add(image_chunks(image), f"images/{image.file_name}")
        archive.add(coco_chunks(plan), "annotations.json")
    else:
        palette = voc_palette()
        if fmt == "yolo":
            archive.add(yolo_data_yaml(plan), "data.yaml")
        elif fmt == "voc":
            archive.add(voc_labelmap(plan, palette), "labelmap.txt")
            stems = "".join(f"{image.stem}\n" for image in plan.images).encode("utf-8")
            archive.add(stems, "ImageSets/Segmentation/default.txt")
        taken: set[str] = set()
        for chunk in annotation_chunks(plan):
            for image in chunk:
                _add_image_entries(archive, plan, fmt, image, palette, taken)
            yield from archive.all_files()
    archive.add(_lazy(lambda: readme_text(plan, fmt)), "README.txt")
    yield from archive.finalize()


def _add_image_entries(
    archive: ZipStream, plan: ExportPlan, fmt: str, image: ExportImage, palette: list[int], taken: set[str]
) -> None:
    if fmt == "yolo":
        archive.add(image_chunks(image), f"images/{image.file_name}")
        archive.add(_lazy(lambda image=image: yolo_label_text(image)), f"labels/{image.stem}.txt")
    elif fmt == "voc":
        archive.add(image_chunks(image), f"JPEGImages/{image.file_name}")
        archive.add(_lazy(lambda image=image: voc_png(image, palette)), f"SegmentationClass/{image.stem}.png")
    else:
        for a in image.annotations:
            if a.record is None or plan.job.compose == ComposeMode.EACH:
                base = f"masks/{image.stem}"  # the variant's name already carries the template's
            else:
                base = f"masks/{image.stem}__{safe_name_part(a.template_name, 'template')}"
            arcname = unique_entry_name(base, "png", taken)
            if a.mask_storage_name:
                archive.add(file_chunks(a.mask_storage_name), arcname)
            else:
                archive.add(_lazy(lambda a=a: encode_mask_png(rle_decode(a.record["rle"]))), arcname)


def export_filename(job: GenerationJob, fmt: str) -> str:
    return f"{job_file_stem(job)}-{fmt}.zip"


def export_response(
    request: HttpRequest, job: GenerationJob, fmt: str, *, exclude_flagged: bool = False
) -> StreamingHttpResponse:
    archive = export_zip(job, fmt, exclude_flagged=exclude_flagged)
    # The stream reads the database (annotations, chunk by chunk): under ASGI it runs in the request's own
    # thread (thread-sensitive), so it uses the request's connection, closed when the request finishes.
    return stream_response(
        request,
        archive,
        content_type="application/zip",
        size=None,
        filename=export_filename(job, fmt),
        thread_sensitive=True,
    )
