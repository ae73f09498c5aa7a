"""Streaming downloads: a job's ZIP (variants, masks, manifest) and single variant files.

The ZIP is built by zipstream-ng with stored entries (PNG/JPEG/WebP do not compress further), sized up front
so the response carries a Content-Length, and every file is read from storage in 64 KiB chunks while the
archive streams: memory stays flat whatever the job's size. Under ASGI the iterator is wrapped as an async
iterator that pulls batches in a worker thread; Django would otherwise materialise a sync iterator in full
before sending the first byte.

Entry names: ``<image stem>.<ext>`` (stack) or ``<image stem>__<template name>.<ext>`` (each), sanitised and
made unique by ``datasets.services.names`` (``-2``, ``-3``... on collisions, compared case-insensitively); ``masks/<same name>.png`` when the
job exports masks (the masks are always stored, ``export_mask`` decides what the ZIP carries; an annotate job's
variants have no image, so their masks are always in, and their manifest ``file`` is null); and
``manifest.json`` with the job's parameters, its segmenter, the template snapshot, and per variant the image,
template(s), score, area, size, the sha256 of the file, stability and quality flags.

Training-ready exports (COCO, YOLO, VOC, masks) are built in ``datasets.jobs.exports`` with the same helpers.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from asgiref.sync import sync_to_async
from django.core.files.storage import default_storage
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from zipstream import ZIP_STORED, ZipStream

from datasets.models import STACK_TEMPLATE_KEY, ComposeMode, GenerationJob, ItemStatus, Variant
from datasets.services.names import header_filename, name_slug, safe_name_part, unique_entry_name
from imaging.codecs import FORMAT_CONTENT_TYPES, FORMAT_EXTENSIONS

CHUNK_SIZE = 64 * 1024


async def aiter_in_thread(
    iterable: Iterable[bytes], batch: int = 16, *, thread_sensitive: bool = False
) -> AsyncIterator[bytes]:
    """Drive a blocking iterator from async code, ``batch`` items per trip to a worker thread.

    ``thread_sensitive``: every trip runs in the request's own sync thread (the one its view ran in), for an
    iterator that reads the database: it then uses the request's connection, which Django closes when the
    request finishes (a pool thread's connection would outlive the request)."""
    iterator = iter(iterable)
    take = sync_to_async(lambda: list(itertools.islice(iterator, batch)), thread_sensitive=thread_sensitive)
    while chunk := await take():
        for part in chunk:
            yield part


def stream_response(
    request: HttpRequest,
    chunks: Iterable[bytes],
    *,
    content_type: str,
    size: int | None,
    filename: str,
    attachment: bool = True,
    thread_sensitive: bool = False,
) -> StreamingHttpResponse:
    """A streaming response that ASGI does not buffer (async iterator) and WSGI serves natively
    (``thread_sensitive``: see :func:`aiter_in_thread`)."""
    django_request = getattr(request, "_request", request)
    if isinstance(django_request, ASGIRequest):
        content = aiter_in_thread(chunks, thread_sensitive=thread_sensitive)
    else:
        content = chunks
    response = StreamingHttpResponse(content, content_type=content_type)
    if size is not None:
        response["Content-Length"] = str(size)
    disposition = "attachment" if attachment else "inline"
    response["Content-Disposition"] = f'{disposition}; filename="{header_filename(filename)}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


def file_chunks(name: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Read a stored file lazily: opened when iteration starts, closed when it ends."""
    with default_storage.open(name, "rb") as handle:
        while data := handle.read(chunk_size):
            yield data


#: Files are served as data, never as a page: if one is opened directly, nothing in it may run.
FILE_CSP = "default-src 'none'; img-src 'self'; sandbox"


def harden_file_response(response):
    """The headers every file view sends: no MIME sniffing, and a CSP that sandboxes the file if opened."""
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = FILE_CSP
    return response


def variant_file_response(
    request: HttpRequest, variant: Variant, *, mask: bool = False
) -> StreamingHttpResponse:
    """The variant's image (or its mask PNG), inline, named as in the job's ZIP."""
    field_file = variant.mask_file if mask else variant.file
    job = variant.job
    base = _variant_base_name(variant.image.filename, variant, job)
    if mask:
        content_type, filename = "image/png", f"{base}_mask.png"
    else:
        content_type = FORMAT_CONTENT_TYPES[job.output_format]
        filename = f"{base}.{FORMAT_EXTENSIONS[job.output_format]}"
    response = stream_response(
        request,
        file_chunks(field_file.name),
        content_type=content_type,
        size=default_storage.size(field_file.name),
        filename=filename,
        attachment=False,
    )
    return harden_file_response(response)


@dataclass(frozen=True)
class ZipEntry:
    arcname: str
    storage_name: str
    size: int


def _variant_base_name(image_filename: str, variant: Variant, job: GenerationJob) -> str:
    stem = safe_name_part(PurePosixPath(image_filename).stem, "image")
    if job.compose in (ComposeMode.EACH, ComposeMode.ANNOTATE) and variant.template_key != STACK_TEMPLATE_KEY:
        template_name = variant.template_names[0] if variant.template_names else variant.template_key
        return f"{stem}__{safe_name_part(template_name, 'template')}"
    return stem


def job_zip(job: GenerationJob) -> ZipStream:
    """The job's archive, ready to stream. Reads every row and file size now (the stream touches no DB)."""
    ext = FORMAT_EXTENSIONS[job.output_format]
    variants = list(job.variants.select_related("image").order_by("image__position", "template_key"))
    taken: set[str] = {"manifest.json"}
    entries: list[ZipEntry] = []
    mask_entries: list[ZipEntry] = []
    manifest_variants = []
    for variant in variants:
        base = _variant_base_name(variant.image.filename, variant, job)
        arcname = None
        if variant.file:
            arcname = unique_entry_name(base, ext, taken)
            entries.append(ZipEntry(arcname, variant.file.name, default_storage.size(variant.file.name)))
        record = {
            "file": arcname,
            "image": variant.image.filename,
            "image_id": variant.image_id.hex,
            "template_ids": list(variant.template_ids),
            "template_names": list(variant.template_names),
            "score": round(float(variant.score), 6),
            "area": variant.area,
            "width": variant.width,
            "height": variant.height,
            "sha256": variant.sha256,
            "stability": variant.stability,
            "flags": list(variant.flags or []),
        }
        if variant.mask_file and (job.export_mask or not variant.file):
            if arcname is not None:
                mask_name = f"masks/{arcname.rsplit('.', 1)[0]}.png"
            else:
                mask_name = unique_entry_name(f"masks/{base}", "png", taken)
            mask_entries.append(
                ZipEntry(mask_name, variant.mask_file.name, default_storage.size(variant.mask_file.name))
            )
            record["mask"] = mask_name
        manifest_variants.append(record)

    manifest = job_manifest(job, manifest_variants)
    archive = ZipStream(compress_type=ZIP_STORED, sized=True)
    for entry in itertools.chain(entries, mask_entries):
        archive.add(file_chunks(entry.storage_name), entry.arcname, size=entry.size)
    archive.add(json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"), "manifest.json")
    return archive


def job_manifest(job: GenerationJob, variants: list[dict]) -> dict:
    problems = job.items.filter(status__in=[ItemStatus.FAILED, ItemStatus.SKIPPED]).select_related("image")
    return {
        "job": {
            "id": job.id.hex,
            "dataset_id": job.dataset_id.hex,
            "dataset": job.dataset.name,
            "status": job.status,
            "compose": job.compose,
            "format": job.output_format,
            "export_mask": job.export_mask,
            "segmenter": job.segmenter,
            "created": job.created.isoformat(),
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "total_items": job.total_items,
            "succeeded_items": job.succeeded_items,
            "failed_items": job.failed_items,
            "skipped_items": job.skipped_items,
            "variant_count": job.variant_count,
            "templates": job.templates_snapshot,
        },
        "generated_at": timezone.now().isoformat(),
        "variants": variants,
        "failed": [
            {"image": i.image.filename, "image_id": i.image_id.hex, "error": i.error}
            for i in problems
            if i.status == ItemStatus.FAILED
        ],
        "skipped": [
            {"image": i.image.filename, "image_id": i.image_id.hex}
            for i in problems
            if i.status == ItemStatus.SKIPPED
        ],
    }


def job_file_stem(job: GenerationJob) -> str:
    """``<dataset-slug>-<job short id>``: the name of the job's downloads ("holiday-photos-1a2b3c4d")."""
    return f"{name_slug(job.dataset.name, max_length=60, fallback='dataset')}-{job.id.hex[:8]}"


def job_zip_filename(job: GenerationJob) -> str:
    return f"{job_file_stem(job)}.zip"


def job_zip_response(request: HttpRequest, job: GenerationJob) -> StreamingHttpResponse:
    archive = job_zip(job)
    return stream_response(
        request, archive, content_type="application/zip", size=len(archive), filename=job_zip_filename(job)
    )
