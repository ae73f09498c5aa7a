"""Processing a job's images: every image once through the encoder, every template's mask and edits, stored.

Runners call :func:`generate_job` (all of one job's work, in this thread: the inline runner, the CLI) or
:func:`work_once` (one chunk of whichever job the fair scheduler picks: the embedded thread, Celery tasks).
Both claim chunks of items through ``datasets.jobs.services`` and commit every image through it; this module
holds no state transition of its own. Per image: decode once, get the embedding from the shared cache or encode
it once for all templates, predict each applicable template's mask (class filter), render the edits (stack or
each; annotate renders nothing and writes only the masks), encode the outputs and their masks, annotate every
mask (RLE, box, scores, quality flags: ``datasets.jobs.quality``; counted in the "encode" stage), store the
files, then commit (variants, item, counters, ``item`` event in one transaction fenced on this worker's lease).
A failing image fails its item (the reason is kept) and the chunk goes on.

Overlap: a pool thread *prepares* the next image (decode, then its embedding from the cache or the encoder)
and up to :data:`RENDERS_IN_FLIGHT` others *render* the previous ones (edits, output encodes, store), while
the worker thread predicts the current image's masks (cv2/numpy/ISA-L and torch release the GIL, so on two
cores the model, the edits and the codecs run at once). Images are committed, and their events sent, in
order, as soon as their outputs are stored (never held back by the next image's encode). The pool never
touches the database.

Cancel and leases: before every image the worker renews its lease on the chunk's remaining items and reads the
job's cancel flag; on a cancel it releases the items it has not started, so a cancel takes effect within one
image on every worker. Stored files are named per attempt (``<image>-<key>-a<attempt>``), so a worker that
lost its lease, or a retry while a ZIP download streams, never overwrites a file another row points to.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError

from datasets.image_io import decode_dataset_image
from datasets.jobs import quality, services
from datasets.jobs.outputs import RecentOutput, recent_outputs
from datasets.jobs.services import Claim, ItemResult
from datasets.jobs.snapshots import spec_from_snapshot
from datasets.models import (
    STACK_TEMPLATE_KEY,
    ComposeMode,
    GenerationJob,
    ItemStatus,
    JobItem,
    JobSource,
    Variant,
)
from datasets.segmentation import app_segmenter, embedding_for, segmenter_label
from datasets.services.previews import embedding_seen_by_owner
from imaging.codecs import FORMAT_EXTENSIONS, DecodedImage, encode_image, encode_mask_png, sha256_hex
from imaging.pipeline import (
    TemplateSpec,
    VariantResult,
    render_variants,
    segment_templates,
    template_applies,
)

logger = logging.getLogger(__name__)

#: Per-stage timing keys of ``GenerationJob.timings_ms`` (milliseconds, summed over images, chunks, workers).
#: ``wall`` is the elapsed time of the image loops; ``sum(stages) - wall`` is what the overlap saved.
STAGES = ("decode", "embed", "predict", "edit", "encode", "store")
#: Images rendered (edits, encodes, store) at once behind the one being predicted. Two: with a warm cache
#: an image's render (~210 ms of CPU at 2048x1536, two templates) outlasts its prediction (~120 ms), so with
#: one the worker thread waits for it after every prediction. On this project's 2-core machine the two are
#: within its noise (0.287 against 0.30 s per warm image, medians of four alternating runs): both cores are
#: already busy there. A machine with a core to spare per worker gets the second render for free.
RENDERS_IN_FLIGHT = 2

_MAX_ERROR_CHARS = services.MAX_ERROR_CHARS


def generate_job(job_id: uuid.UUID | str, *, worker: str | None = None) -> GenerationJob | None:
    """Process every claimable item of job ``job_id`` in this thread, chunk after chunk, until none is left.

    Returns the job as it stands afterwards (None when it does not exist). Items other workers hold are left to
    them. Database errors propagate (the runner marks the job failed); errors of a single image only fail that
    image's item.
    """
    worker = worker or services.worker_identity()
    while (claim := services.items_claim(worker=worker, job_id=job_id)) is not None:
        process_claim(claim)
    return GenerationJob.objects.filter(pk=job_id).first()


def work_once(*, worker: str | None = None) -> bool:
    """Claim and process one chunk of whichever job the fair scheduler picks; False when there was none."""
    claim = services.items_claim(worker=worker or services.worker_identity())
    if claim is None:
        return False
    process_claim(claim)
    return True


def process_claim(claim: Claim) -> None:
    """Run the claimed chunk to its end (or to a cancel); the job ends when its last item does."""
    job = claim.job
    started = time.perf_counter()
    try:
        segmenter = app_segmenter(job.dataset)
    except Exception as exc:  # no checkpoint, unreadable weights, ...
        services.job_fail(job_id=job.id, error=f"segmenter unavailable: {exc}")
        return
    timings = {"load": (time.perf_counter() - started) * 1000}
    # Loading a model can take longer than a lease: renew it before the first image.
    services.items_heartbeat(worker=claim.worker, item_ids=claim.item_ids)
    services.job_record_segmenter(
        job=job,
        # Machine-readable first (backend:size:fingerprint), then the family and size for people.
        label=f"{segmenter.backend}:{segmenter.model_type or '-'}:{segmenter.fingerprint} "
        f"({segmenter_label(segmenter)})",
    )
    specs = sorted((spec_from_snapshot(s) for s in job.templates_snapshot), key=lambda spec: spec.order)
    processor = _ChunkProcessor(claim=claim, specs=specs, segmenter=segmenter, timings=timings)
    try:
        processor.run()
    finally:
        services.job_add_timings(job=job, timings=timings)


def variant_file_names(
    job: GenerationJob, image_id: uuid.UUID, template_key: str, attempt: int
) -> tuple[str, str]:
    """Storage names of a variant and its mask for one attempt at the item: a rerun writes new files and the
    commit swaps the rows, so no name a committed row points to is ever overwritten."""
    ext = FORMAT_EXTENSIONS[job.output_format]
    stem = f"variants/{job.id.hex}/{image_id.hex}-{template_key}-a{attempt}"
    return f"{stem}.{ext}", f"{stem}-mask.png"


def _save_exact(name: str, data: bytes) -> str:
    if default_storage.exists(name):
        default_storage.delete(name)  # only ever a file of this very attempt that never got committed
    return default_storage.save(name, ContentFile(data))


def _delete_quietly(names) -> None:
    for name in names:
        try:
            if name and default_storage.exists(name):
                default_storage.delete(name)
        except OSError:
            logger.warning("could not delete %s", name, exc_info=True)


@dataclass
class _Prepared:
    """An image decoded and embedded off the worker thread (or the reason it could not be)."""

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
    annotations: list[dict] = field(default_factory=list)


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


class _ChunkProcessor:
    def __init__(self, *, claim: Claim, specs: list[TemplateSpec], segmenter, timings: dict[str, float]):
        self.claim = claim
        self.job = claim.job
        self.worker = claim.worker
        self.specs = specs
        self.segmenter = segmenter
        self.timings = timings
        # One variant per (image, template) in "each" and "annotate"; annotate writes no image at all.
        self.annotate = self.job.compose == ComposeMode.ANNOTATE
        self.each = self.job.compose in (ComposeMode.EACH, ComposeMode.ANNOTATE)
        self.labels = quality.snapshot_labels(self.job)
        self.limits = quality.thresholds()
        self.references = quality.reference_stats(job=self.job, specs=specs, segmenter=segmenter)

    def run(self) -> None:
        items = list(self.claim.items)
        started = time.perf_counter()
        # One pool thread prepares the next image while up to RENDERS_IN_FLIGHT others render, encode and
        # store the previous ones; this thread predicts, and commits the images in order, each as soon as its
        # outputs are stored. On two cores the model, the edits and the codecs run at the same time, and a
        # second render in flight keeps both cores busy once predicting an image is quicker than rendering one.
        in_flight: deque[_Outcome] = deque()
        with ThreadPoolExecutor(max_workers=1 + RENDERS_IN_FLIGHT, thread_name_prefix="samgen-io") as pool:
            upcoming: Future | None = pool.submit(self._prepare, items[0]) if items else None
            for position, item in enumerate(items):
                remaining = [i.pk for i in items[position:]]
                held = services.items_heartbeat(
                    worker=self.worker, item_ids=[o.item.pk for o in in_flight] + remaining
                )
                if self._cancel_requested():
                    if upcoming is not None:
                        upcoming.cancel()
                    not_started = [pk for pk in held if pk in remaining]
                    services.items_release(worker=self.worker, job=self.job, item_ids=not_started)
                    break
                self._commit_rendered(in_flight, upcoming)
                prepared = upcoming.result()
                has_next = position + 1 < len(items)
                upcoming = pool.submit(self._prepare, items[position + 1]) if has_next else None
                if item.pk not in held:
                    logger.warning("job %s: lost the lease on item %s; skipping it", self.job.id, item.index)
                    continue
                in_flight.append(self._process(prepared, pool))
                while len(in_flight) > RENDERS_IN_FLIGHT or (in_flight and in_flight[0].stored is None):
                    self._commit(in_flight.popleft())
            while in_flight:
                self._commit(in_flight.popleft())  # their work is done (a cancel stops what has not started)
        self.timings["wall"] = self.timings.get("wall", 0.0) + (time.perf_counter() - started) * 1000

    def _commit_rendered(self, in_flight: deque[_Outcome], upcoming: Future) -> None:
        """Commit, in order, the images in flight whose outputs are stored, waiting for the oldest one until
        it is stored or the next image is prepared, whichever comes first (a cold encode never holds back
        the previous image's event)."""
        while in_flight:
            head = in_flight[0]
            if head.stored is not None and not head.stored.done():
                wait([head.stored, upcoming], return_when=FIRST_COMPLETED)
                if not head.stored.done():
                    return
            self._commit(in_flight.popleft())

    def _cancel_requested(self) -> bool:
        row = GenerationJob.objects.filter(pk=self.job.pk).values_list("cancel_requested", "status").first()
        return row is None or bool(row[0]) or row[1] not in services.ACTIVE

    def _prepare(self, item: JobItem) -> _Prepared:
        """Pool thread: decode the stored image and get its embedding (no database access here)."""
        prepared = _Prepared(item=item)
        started = time.perf_counter()
        try:
            prepared.image = decode_dataset_image(item.image)
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
                sha256=item.image.sha256, rgb=prepared.image.rgb, segmenter=self.segmenter
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
        # Reported per owner (as previews are): a hit on an embedding another user's upload made counts as an
        # encoder call, so the job's figures never reveal that someone else has the same photo.
        seen = embedding_seen_by_owner(prepared.item.image, self.segmenter)
        outcome.cache_hit = bool(prepared.cache_hit) and seen
        outcome.encoded = not outcome.cache_hit
        try:
            with _timed(outcome.timings, "predict"):
                masks = segment_templates(
                    self.segmenter,
                    prepared.embedding,
                    prepared.applicable,
                    width=image.width,
                    height=image.height,
                )
        except DatabaseError:
            raise
        except Exception as exc:
            logger.info(
                "job %s: image %s failed: %s", self.job.id, prepared.item.image_id, exc, exc_info=True
            )
            outcome.status, outcome.error = ItemStatus.FAILED, _describe(exc)
            return outcome
        outcome.stored = pool.submit(self._render_and_store, prepared, masks)
        return outcome

    def _render_and_store(self, prepared: _Prepared, masks) -> tuple[list[_StoredFile], dict[str, float]]:
        """Pool thread: render the edits inside the masks (annotate renders nothing), then encode and store
        the outputs; returns the stored files ([] when no template gave a variant) and the stage timings."""
        timings: dict[str, float] = {}
        with _timed(timings, "edit"):
            if self.annotate:
                results = _annotation_results(masks, prepared.applicable)
            else:
                results = render_variants(
                    prepared.image, masks, prepared.applicable, compose=self.job.compose
                )
        if not results:
            return [], timings
        stored, timings["encode"], timings["store"] = self._encode_and_store(prepared.item, results, masks)
        return stored, timings

    def _keys(self) -> list[str]:
        return [spec.id for spec in self.specs] if self.each else [STACK_TEMPLATE_KEY]

    def _encode_and_store(self, item: JobItem, results, masks=()) -> tuple[list[_StoredFile], float, float]:
        """Pool thread: encode each variant (none for an annotation) and its mask, write them under this
        attempt's names, and annotate the masks it carries."""
        encode_ms = store_ms = 0.0
        stored: list[_StoredFile] = []
        by_id = {m.template_id: m for m in masks}
        for result in results:
            t0 = time.perf_counter()
            data = None if result.rgb is None else encode_image(result.rgb, self.job.output_format)
            mask_data = encode_mask_png(result.mask)
            digest = sha256_hex(data) if data is not None else ""
            annotations = [
                quality.annotation_record(
                    by_id[tid],
                    label=self.labels.get(tid, name),
                    reference=self.references.get(tid),
                    limits=self.limits,
                )
                for tid, name in zip(result.template_ids, result.template_names, strict=True)
                if tid in by_id
            ]
            t1 = time.perf_counter()
            key = result.template_ids[0] if self.each else STACK_TEMPLATE_KEY
            name, mask_name = variant_file_names(self.job, item.image_id, key, item.attempts)
            name = _save_exact(name, data) if data is not None else ""
            mask_name = _save_exact(mask_name, mask_data)
            self._remember(name, digest, data, result, mask_data)
            t2 = time.perf_counter()
            encode_ms += (t1 - t0) * 1000
            store_ms += (t2 - t1) * 1000
            height, width = result.mask.shape[:2]
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
                    annotations=annotations,
                )
            )
        return stored, encode_ms, store_ms

    def _remember(self, name: str, digest: str, data: bytes | None, result, mask_data: bytes) -> None:
        """Seed jobs: keep the just-encoded output (and its pixels, for a resized stream rendition) where the
        seed relay of this process finds it without reading the file back (``datasets.jobs.outputs``)."""
        if self.job.source == JobSource.SEED and data is not None:
            recent_outputs.put(
                name,
                RecentOutput(sha256=digest, data=data, rgb=result.rgb, mask=result.mask, mask_png=mask_data),
            )

    def _commit(self, outcome: _Outcome) -> None:
        """Hand the image's outcome to ``item_finish``; discard this attempt's files if the lease was lost."""
        stored: list[_StoredFile] = []
        item = outcome.item
        if outcome.stored is not None:
            try:
                stored, stage_timings = outcome.stored.result()
                outcome.timings.update(stage_timings)
                if not stored:
                    outcome.status = ItemStatus.SKIPPED  # no template gave this image a variant
            except DatabaseError:
                raise
            except Exception as exc:
                logger.info("job %s: image %s failed: %s", self.job.id, item.image_id, exc, exc_info=True)
                outcome.status, outcome.error = ItemStatus.FAILED, _describe(exc)
                self._delete_attempt(item, item.attempts)
        for key, value in outcome.timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + value
        result = ItemResult(
            status=outcome.status,
            variants=self._variants(item, stored),
            error=outcome.error,
            ms=round(sum(outcome.timings.values())),
            cache_hit=outcome.cache_hit,
            encoded=outcome.encoded,
        )
        committed = services.item_finish(worker=self.worker, job=self.job, item=item, result=result)
        if committed is None:
            self._delete_attempt(item, item.attempts)
            return
        self.job.refresh_from_db()
        # Files of earlier attempts that never got committed (their worker died mid-image).
        for attempt in range(1, item.attempts):
            self._delete_attempt(item, attempt)

    def _delete_attempt(self, item: JobItem, attempt: int) -> None:
        _delete_quietly(
            name for key in self._keys() for name in variant_file_names(self.job, item.image_id, key, attempt)
        )

    def _variants(self, item: JobItem, stored: list[_StoredFile]) -> list[Variant]:
        existing = set()
        if self.each and stored:
            wanted = [uuid.UUID(f.template_key) for f in stored]
            existing = {
                pk.hex for pk in self.job.dataset.templates.filter(pk__in=wanted).values_list("pk", flat=True)
            }
        variants = []
        for f in stored:
            flags, stability = quality.variant_quality(f.annotations)
            variant = Variant(
                job=self.job,
                image_id=item.image_id,
                template_id=uuid.UUID(f.template_key) if f.template_key in existing else None,
                template_key=f.template_key,
                template_ids=f.template_ids,
                template_names=f.template_names,
                score=f.score,
                area=f.area,
                width=f.width,
                height=f.height,
                sha256=f.sha256,
                annotations=f.annotations,
                flags=flags,
                stability=stability,
            )
            variant.file.name = f.name
            variant.mask_file.name = f.mask_name
            variants.append(variant)
        return variants


def _annotation_results(masks, applicable: list[TemplateSpec]) -> list[VariantResult]:
    """Annotate mode: one mask-only result per applicable template (``rgb`` None: nothing is rendered or
    encoded), in application order, as ``render_variants`` orders "each"."""
    by_id = {m.template_id: m for m in masks}
    ordered = sorted(enumerate(applicable), key=lambda it: (it[1].order, it[0]))
    return [
        VariantResult(
            template_ids=(t.id,),
            template_names=(t.name,),
            rgb=None,  # type: ignore[arg-type]
            mask=by_id[t.id].mask.astype(bool, copy=False),
            score=by_id[t.id].score,
            area=int(by_id[t.id].mask.sum()),
        )
        for _, t in ordered
        if t.id in by_id
    ]


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
