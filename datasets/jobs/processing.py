"""Running a generation job: every image once through the encoder, every template's mask and edits, stored.

``generate_job(job_id)`` is what every runner calls (inline, the embedded thread, later Celery). It:

1. claims the job with a compare-and-set (``UPDATE ... WHERE status='queued'``): exactly one runner wins,
   and items left ``running`` by a dead runner go back to ``pending``;
2. loads the process's segmenter and records its backend and fingerprint on the job;
3. walks the pending items in upload order. Per image: decode once, get the embedding from the shared cache
   or encode it once for all templates, predict each applicable template's mask (class filter), render the
   edits (stack or each), encode the outputs and their masks, store the files, then in ONE transaction
   create the Variant rows, finish the item and bump the job's counters and timings; its ``item`` event goes
   out on commit. A failing image fails its item (the reason is kept) and the run goes on;
4. checks for a cancel request between images, and ends the job succeeded or canceled.

Overlap: a two-thread pool *prepares* the next image (decode, then its embedding from the cache or the
encoder) and encodes/stores the current image's outputs, while the main thread predicts masks, renders edits
and commits (cv2/PIL/zlib and torch release the GIL). Each image is committed, and its event sent, as soon as
its own outputs are stored: the heavy encoder pass of the next image never delays the previous image's
progress. The pool never touches the database, so everything transactional stays on the runner's thread.

Idempotence: finished items are never redone; stored files have deterministic names per (job, image,
template key), so a retry after a crash overwrites a half-written attempt instead of leaking it, and the
Variant rows of an item are replaced in the transaction that finishes it (unique per job/image/template).
Every write of a running job is fenced on ``worker``: a runner whose job was taken over stops.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from datasets.events import (
    EVENT_DONE,
    EVENT_ITEM,
    EVENT_STATUS,
    done_payload,
    job_counters,
    send_job_event,
    status_payload,
)
from datasets.image_io import decode_stored_image
from datasets.models import (
    STACK_TEMPLATE_KEY,
    ComposeMode,
    GenerationJob,
    ItemStatus,
    JobItem,
    JobStatus,
    Variant,
)
from datasets.segmentation import app_segmenter, embedding_for
from datasets.services.jobs import worker_identity
from imaging.codecs import FORMAT_EXTENSIONS, DecodedImage, encode_image, encode_mask_png, sha256_hex
from imaging.pipeline import TemplateSpec, render_variants, segment_templates, template_applies
from templates_app.models import Template
from templates_app.specs import spec_from_snapshot

logger = logging.getLogger(__name__)

#: Per-stage timing keys of ``GenerationJob.timings_ms`` (milliseconds, summed over images and runs).
#: ``wall`` is the elapsed time of the image loop; ``sum(stages) - wall`` is what the overlap saved.
STAGES = ("decode", "embed", "predict", "edit", "encode", "store")

_MAX_ERROR_CHARS = 2000


class JobLost(Exception):
    """The job is no longer ours (requeued after a stale heartbeat, deleted, ...): stop without writing."""


@dataclass
class _Prepared:
    """An image decoded and embedded off the runner thread (or the reason it could not be)."""

    item: JobItem
    image: DecodedImage | None = None
    applicable: list[TemplateSpec] = field(default_factory=list)
    embedding: object | None = None
    cache_hit: bool = False
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _StoredFile:
    template_key: str
    template_ids: list[str]
    template_names: list[str]
    name: str
    mask_name: str
    score: float
    area: int
    width: int
    height: int
    sha256: str


@dataclass
class _Outcome:
    """Everything known about one image once its outputs are stored, ready to be committed."""

    item: JobItem
    status: str = ItemStatus.SUCCEEDED
    error: str = ""
    cache_hit: bool = False
    encoded: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    stored: Future | None = None  # -> (list[_StoredFile], encode_ms, store_ms)


def generate_job(job_id: uuid.UUID | str, *, worker: str | None = None) -> GenerationJob | None:
    """Run the queued job ``job_id`` to its end (succeeded, canceled, or failed when it cannot run).

    Returns the finished job, or None when the job was not queued (another runner claimed it, it was
    canceled, it does not exist). Database errors propagate (the runner marks the job failed); errors of a
    single image only fail that image's item.
    """
    worker = worker or worker_identity()
    job = claim_job(job_id, worker=worker)
    if job is None:
        return None
    try:
        return _run_claimed(job, worker)
    except JobLost:
        logger.warning("job %s was taken away from %s; stopping", job.id, worker)
        return None


def claim_job(job_id: uuid.UUID | str, *, worker: str) -> GenerationJob | None:
    """queued -> running for exactly one caller; reclaims items a dead runner left running."""
    now = timezone.now()
    with transaction.atomic():
        claimed = GenerationJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
            status=JobStatus.RUNNING,
            worker=worker,
            heartbeat=now,
            started_at=now,
            finished_at=None,
            updated=now,
        )
        if claimed != 1:
            return None  # another runner got there first, or it is not queued any more
        job = GenerationJob.objects.get(pk=job_id)
        JobItem.objects.filter(job=job, status=ItemStatus.RUNNING).update(status=ItemStatus.PENDING)
        send_job_event(job, EVENT_STATUS, status_payload(job))
    return job


def mark_job_failed(job_id: uuid.UUID | str, error: str) -> None:
    """queued | running -> failed, with ``error``; items it was running go back to pending (retryable)."""
    with transaction.atomic():
        updated = GenerationJob.objects.filter(
            pk=job_id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
        ).update(status=JobStatus.FAILED, error=error[:_MAX_ERROR_CHARS], finished_at=timezone.now())
        if updated != 1:
            return
        JobItem.objects.filter(job_id=job_id, status=ItemStatus.RUNNING).update(status=ItemStatus.PENDING)
        job = GenerationJob.objects.get(pk=job_id)
        send_job_event(job, EVENT_STATUS, status_payload(job))
        send_job_event(job, EVENT_DONE, done_payload(job))


def _run_claimed(job: GenerationJob, worker: str) -> GenerationJob:
    loop_started = time.perf_counter()
    timings = {key: float(value) for key, value in (job.timings_ms or {}).items()}
    try:
        segmenter = app_segmenter()
    except Exception as exc:  # no checkpoint, unreadable weights, ...
        return _finish(job, worker, JobStatus.FAILED, error=f"segmenter unavailable: {exc}")
    timings["load"] = timings.get("load", 0.0) + (time.perf_counter() - loop_started) * 1000
    label = f"{segmenter.backend}:{segmenter.model_type or '-'}:{segmenter.fingerprint}"[:200]
    _fenced(job, worker).update(segmenter=label, timings_ms=_rounded(timings))
    job.segmenter = label

    specs = sorted((spec_from_snapshot(s) for s in job.templates_snapshot), key=lambda spec: spec.order)
    items = list(
        JobItem.objects.filter(job=job, status=ItemStatus.PENDING).select_related("image").order_by("index")
    )
    processor = _JobProcessor(job=job, worker=worker, specs=specs, segmenter=segmenter, timings=timings)
    canceled = processor.run(items)
    return _finish(job, worker, JobStatus.CANCELED if canceled else JobStatus.SUCCEEDED)


def _finish(job: GenerationJob, worker: str, status: str, *, error: str = "") -> GenerationJob:
    with transaction.atomic():
        updated = _fenced(job, worker).update(
            status=status,
            error=error[:_MAX_ERROR_CHARS],
            finished_at=timezone.now(),
            heartbeat=timezone.now(),
        )
        if updated != 1:
            raise JobLost(job.id)
        job.refresh_from_db()
        send_job_event(job, EVENT_STATUS, status_payload(job))
        send_job_event(job, EVENT_DONE, done_payload(job))
    return job


def _fenced(job: GenerationJob, worker: str):
    """The job row, only while it is running under ``worker`` (the lease every write checks)."""
    return GenerationJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING, worker=worker)


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 1) for key, value in timings.items()}


def variant_file_names(job: GenerationJob, image_id: uuid.UUID, template_key: str) -> tuple[str, str]:
    """Deterministic storage names of a variant and its mask: a rerun of the item overwrites, never leaks."""
    ext = FORMAT_EXTENSIONS[job.output_format]
    stem = f"variants/{job.id.hex}/{image_id.hex}-{template_key}"
    return f"{stem}.{ext}", f"{stem}-mask.png"


def _save_exact(name: str, data: bytes) -> str:
    if default_storage.exists(name):
        default_storage.delete(name)
    return default_storage.save(name, ContentFile(data))


class _JobProcessor:
    def __init__(self, *, job: GenerationJob, worker: str, specs: list[TemplateSpec], segmenter, timings):
        self.job = job
        self.worker = worker
        self.specs = specs
        self.segmenter = segmenter
        self.timings = timings
        self.each = job.compose == ComposeMode.EACH

    def run(self, items: list[JobItem]) -> bool:
        """Process ``items`` in order; True when the run stopped on a cancel request."""
        started = time.perf_counter()
        canceled = False
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="samgen-io") as pool:
            upcoming: Future | None = pool.submit(self._prepare, items[0]) if items else None
            for position, item in enumerate(items):
                if self._cancel_requested():
                    canceled = True
                    if upcoming is not None:
                        upcoming.cancel()
                    break
                prepared = upcoming.result()
                has_next = position + 1 < len(items)
                upcoming = pool.submit(self._prepare, items[position + 1]) if has_next else None
                self._mark_running(item)
                self._commit(self._process(prepared, pool))
        self.timings["wall"] = self.timings.get("wall", 0.0) + (time.perf_counter() - started) * 1000
        _fenced(self.job, self.worker).update(timings_ms=_rounded(self.timings))
        return canceled

    def _cancel_requested(self) -> bool:
        row = GenerationJob.objects.filter(pk=self.job.pk).values_list("cancel_requested", "status", "worker")
        found = row.first()
        if found is None or found[1] != JobStatus.RUNNING or found[2] != self.worker:
            raise JobLost(self.job.id)
        return bool(found[0])

    def _mark_running(self, item: JobItem) -> None:
        now = timezone.now()
        with transaction.atomic():
            if _fenced(self.job, self.worker).update(heartbeat=now) != 1:
                raise JobLost(self.job.id)
            JobItem.objects.filter(pk=item.pk, status=ItemStatus.PENDING).update(
                status=ItemStatus.RUNNING, attempts=F("attempts") + 1, error="", updated=now
            )

    def _prepare(self, item: JobItem) -> _Prepared:
        """Pool thread: decode the stored image and get its embedding (no database access here)."""
        prepared = _Prepared(item=item)
        started = time.perf_counter()
        try:
            prepared.image = decode_stored_image(item.image.file)
        except Exception as exc:
            prepared.error = _describe(exc)
            return prepared
        finally:
            prepared.timings["decode"] = (time.perf_counter() - started) * 1000
        prepared.applicable = [
            spec for spec in self.specs if template_applies(spec.image_class, item.image.image_class)
        ]
        if not prepared.applicable:
            return prepared  # skipped: never spend an encoder pass on it
        started = time.perf_counter()
        try:
            prepared.embedding, prepared.cache_hit = embedding_for(
                sha256=item.image.sha256, rgb=prepared.image.rgb
            )
        except Exception as exc:
            logger.info("job %s: embedding of image %s failed", self.job.id, item.image_id, exc_info=True)
            prepared.error = _describe(exc)
        finally:
            prepared.timings["embed"] = (time.perf_counter() - started) * 1000
        return prepared

    def _process(self, prepared: _Prepared, pool: ThreadPoolExecutor) -> _Outcome:
        outcome = _Outcome(item=prepared.item, timings=dict(prepared.timings))
        if prepared.error:
            outcome.status, outcome.error = ItemStatus.FAILED, prepared.error
            return outcome
        if not prepared.applicable:
            outcome.status = ItemStatus.SKIPPED
            return outcome
        image = prepared.image
        outcome.cache_hit, outcome.encoded = bool(prepared.cache_hit), not prepared.cache_hit
        try:
            with _timed(outcome.timings, "predict"):
                masks = segment_templates(
                    self.segmenter,
                    prepared.embedding,
                    prepared.applicable,
                    width=image.width,
                    height=image.height,
                )
            with _timed(outcome.timings, "edit"):
                results = render_variants(image, masks, prepared.applicable, compose=self.job.compose)
        except DatabaseError:
            raise
        except Exception as exc:
            logger.info(
                "job %s: image %s failed: %s", self.job.id, prepared.item.image_id, exc, exc_info=True
            )
            outcome.status, outcome.error = ItemStatus.FAILED, _describe(exc)
            return outcome
        if not results:
            outcome.status = ItemStatus.SKIPPED
            return outcome
        outcome.stored = pool.submit(self._encode_and_store, prepared.item, results)
        return outcome

    def _encode_and_store(self, item: JobItem, results) -> tuple[list[_StoredFile], float, float]:
        """Pool thread: encode each variant and its mask, write them under their deterministic names."""
        encode_ms = store_ms = 0.0
        stored: list[_StoredFile] = []
        for result in results:
            t0 = time.perf_counter()
            data = encode_image(result.rgb, self.job.output_format)
            mask_data = encode_mask_png(result.mask)
            digest = sha256_hex(data)
            t1 = time.perf_counter()
            key = result.template_ids[0] if self.each else STACK_TEMPLATE_KEY
            name, mask_name = variant_file_names(self.job, item.image_id, key)
            name = _save_exact(name, data)
            mask_name = _save_exact(mask_name, mask_data)
            t2 = time.perf_counter()
            encode_ms += (t1 - t0) * 1000
            store_ms += (t2 - t1) * 1000
            height, width = result.rgb.shape[:2]
            stored.append(
                _StoredFile(
                    template_key=key,
                    template_ids=list(result.template_ids),
                    template_names=list(result.template_names),
                    name=name,
                    mask_name=mask_name,
                    score=float(result.score),
                    area=int(result.area),
                    width=int(width),
                    height=int(height),
                    sha256=digest,
                )
            )
        return stored, encode_ms, store_ms

    def _commit(self, outcome: _Outcome) -> None:
        """Create the item's variants, finish it and bump the job's counters: one transaction, one event."""
        stored: list[_StoredFile] = []
        if outcome.stored is not None:
            try:
                stored, encode_ms, store_ms = outcome.stored.result()
                outcome.timings["encode"] = encode_ms
                outcome.timings["store"] = store_ms
            except DatabaseError:
                raise
            except Exception as exc:
                logger.info(
                    "job %s: storing image %s failed", self.job.id, outcome.item.image_id, exc_info=True
                )
                outcome.status, outcome.error = ItemStatus.FAILED, _describe(exc)
                self._delete_partial(outcome.item)

        t0 = time.perf_counter()
        item = outcome.item
        with transaction.atomic():
            if not JobItem.objects.select_for_update().filter(pk=item.pk).exists():
                # The image was deleted while the job ran (its item went with it): drop its files, shrink total.
                _fenced(self.job, self.worker).update(total_items=F("total_items") - 1)
                transaction.on_commit(lambda: self._delete_files(stored))
                return
            variants = self._variants(item, stored)
            Variant.objects.filter(job=self.job, image_id=item.image_id).delete()
            Variant.objects.bulk_create(variants)
            outcome.timings["store"] = outcome.timings.get("store", 0.0) + (time.perf_counter() - t0) * 1000
            item_ms = round(sum(outcome.timings.values()))
            JobItem.objects.filter(pk=item.pk).update(
                status=outcome.status,
                error=outcome.error[:_MAX_ERROR_CHARS],
                ms=item_ms,
                cache_hit=outcome.cache_hit,
                updated=timezone.now(),
            )
            for key, value in outcome.timings.items():
                self.timings[key] = self.timings.get(key, 0.0) + value
            counter = {
                ItemStatus.SUCCEEDED: "succeeded_items",
                ItemStatus.FAILED: "failed_items",
                ItemStatus.SKIPPED: "skipped_items",
            }[outcome.status]
            updated = _fenced(self.job, self.worker).update(
                **{counter: F(counter) + 1},
                variant_count=F("variant_count") + len(variants),
                encoder_calls=F("encoder_calls") + int(outcome.encoded),
                cache_hits=F("cache_hits") + int(outcome.cache_hit),
                timings_ms=_rounded(self.timings),
                heartbeat=timezone.now(),
                updated=timezone.now(),
            )
            if updated != 1:
                raise JobLost(self.job.id)
            self.job.refresh_from_db()
            item.status, item.error, item.ms, item.cache_hit = (
                outcome.status,
                outcome.error,
                item_ms,
                outcome.cache_hit,
            )
            send_job_event(self.job, EVENT_ITEM, item_payload(self.job, item, variants))

    def _variants(self, item: JobItem, stored: list[_StoredFile]) -> list[Variant]:
        existing = set()
        if self.each and stored:
            wanted = [uuid.UUID(f.template_key) for f in stored]
            existing = {pk.hex for pk in Template.objects.filter(pk__in=wanted).values_list("pk", flat=True)}
        variants = []
        for f in stored:
            variant = Variant(
                job=self.job,
                image_id=item.image_id,
                template_id=uuid.UUID(f.template_key) if f.template_key in existing else None,
                template_key=f.template_key,
                template_names=f.template_names,
                score=f.score,
                area=f.area,
                width=f.width,
                height=f.height,
                sha256=f.sha256,
            )
            variant.file.name = f.name
            variant.mask_file.name = f.mask_name
            variant._template_ids = f.template_ids  # for the event payload only
            variants.append(variant)
        return variants

    def _delete_partial(self, item: JobItem) -> None:
        keys = [STACK_TEMPLATE_KEY] if not self.each else [spec.id for spec in self.specs]
        for key in keys:
            for name in variant_file_names(self.job, item.image_id, key):
                try:
                    if default_storage.exists(name):
                        default_storage.delete(name)
                except OSError:
                    logger.warning("could not delete %s", name, exc_info=True)

    @staticmethod
    def _delete_files(stored: list[_StoredFile]) -> None:
        for f in stored:
            for name in (f.name, f.mask_name):
                try:
                    default_storage.delete(name)
                except OSError:
                    logger.warning("could not delete %s", name, exc_info=True)


def item_payload(job: GenerationJob, item: JobItem, variants: list[Variant]) -> dict:
    """The ``item`` event of one processed image (see ``datasets.events`` for the shape)."""
    entries = []
    template_ids: list[str] = []
    template_names: list[str] = []
    for variant in variants:
        ids = getattr(variant, "_template_ids", None) or (
            [variant.template_key] if variant.template_key != STACK_TEMPLATE_KEY else []
        )
        for template_id, name in zip(ids, variant.template_names, strict=False):
            if template_id not in template_ids:
                template_ids.append(template_id)
                template_names.append(name)
        entries.append(
            {
                "id": variant.id.hex,
                "template_key": variant.template_key,
                "template_ids": list(ids),
                "template_names": list(variant.template_names),
                "score": round(variant.score, 4),
                "area": variant.area,
                "width": variant.width,
                "height": variant.height,
                "sha256": variant.sha256,
                "url": reverse("api-variant-file", args=[variant.id.hex]),
                "mask_url": reverse("api-variant-mask", args=[variant.id.hex]) if variant.mask_file else None,
            }
        )
    first = entries[0] if entries else None
    payload = {
        "job_id": job.id.hex,
        "index": item.index,
        "total": job.total_items,
        "image_id": item.image_id.hex,
        "filename": item.image.filename,
        "status": item.status,
        "ms": item.ms,
        "cache_hit": item.cache_hit,
        "template_ids": template_ids,
        "template_names": template_names,
        "score": first["score"] if first else None,
        "area": first["area"] if first else None,
        "variant_id": first["id"] if first else None,
        "variant_url": first["url"] if first else None,
        "mask_url": first["mask_url"] if first else None,
        "variants": entries,
        "counters": job_counters(job),
    }
    if item.status == ItemStatus.FAILED:
        payload["error"] = item.error
    return payload


def _describe(exc: BaseException) -> str:
    """A message for the user: the imaging errors' own text; never a server path from an OSError."""
    if isinstance(exc, FileNotFoundError):
        return "the stored file is missing"
    if isinstance(exc, OSError):
        return f"could not read or write a stored file ({type(exc).__name__})"
    text = str(exc).strip()
    return (text or type(exc).__name__)[:_MAX_ERROR_CHARS]


class _timed:
    """``with _timed(timings, "stage"):`` adds the block's milliseconds to ``timings["stage"]``."""

    def __init__(self, timings: dict[str, float], key: str):
        self.timings, self.key = timings, key

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.key] = self.timings.get(self.key, 0.0) + (time.perf_counter() - self.started) * 1000
