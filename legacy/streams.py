"""Server-sent event streams of the seed API, as async generators (ASGI streams them chunk by chunk;
a sync iterator would be buffered whole by Django's ASGI handler before the first byte).

Wire format of the old tool: one ``data: <compact JSON>`` line and a blank line per event, ``: ...`` comment
lines for the opening and keep-alives (every SSE parser ignores them), ``data: [DONE]`` to end the batch and
apply streams.

``apply_stream`` does not compute anything itself: the request creates a persisted GenerationJob that the
configured runner executes (embedded thread, Celery worker, or inline in tests), and :func:`job_relay`
turns each finished item into the old per-image event. It listens on the job's event channel
(django-eventstream's listener manager: this process's events, or every process's through Redis) and, on
each wake-up, reads the job's stored events after the last one it saw; the stored log is the source of
truth, so the relay works whichever process runs the job and misses nothing, and the database is not
polled while the job is busy. A client that disconnects only stops the relay, never the job. Variant bytes
come from the runner's just-encoded buffers when it runs in this process (``datasets.jobs.outputs``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from asgiref.sync import sync_to_async
from django.http import HttpResponse, StreamingHttpResponse

from datasets.image_io import decode_dataset_image, read_file_bytes
from datasets.jobs.events import (
    EVENT_DONE,
    EVENT_ITEM,
    TooManyStreams,
    job_channel,
    stream_slot_acquire,
    too_many_streams_response,
    with_stream_slot,
)
from datasets.jobs.outputs import recent_outputs
from datasets.jobs.relay import relay_events
from datasets.models import STACK_TEMPLATE_KEY, GenerationJob, ItemStatus, JobItem, Variant
from imaging.codecs import b64encode, decode_image, encode_image, encode_mask_png
from imaging.pipeline import output_pixels
from legacy.wire import image_event

logger = logging.getLogger(__name__)

#: A comment goes out after this many silent seconds, so proxies and clients keep the connection open.
KEEPALIVE_SECONDS = 5.0
#: The relay re-reads the job's stored events after this many seconds without a notification (a safety
#: net; every committed event also wakes it at once).
FALLBACK_SECONDS = 5.0
#: EventSource clients reconnect after this many ms (the relay is idempotent: it starts from the job's rows).
RETRY_MS = 3000

KEEPALIVE = ": keep-alive\n\n"
DONE_MARKER = "data: [DONE]\n\n"


def sse_data(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def sse_open(comment: str) -> str:
    """The first bytes of every stream, sent at once: a comment (ignored by parsers) and the retry delay."""
    return f": {comment}\nretry: {RETRY_MS}\n\n"


def stream_slot_or_refusal(user) -> HttpResponse | None:
    """Take one of ``user``'s open-stream slots (SSE_MAX_CONNECTIONS_PER_USER, shared with the REST and page
    streams); the 429 JSON answer when none is left."""
    try:
        stream_slot_acquire(user)
    except TooManyStreams as exc:
        return too_many_streams_response(exc)
    return None


def event_stream_response(stream: AsyncIterator[str], *, user, slot_held: bool = False) -> HttpResponse:
    """The SSE response over ``stream``, holding one of ``user``'s stream slots while it is sent (taken here
    unless the caller already took it with :func:`stream_slot_or_refusal`)."""
    if not slot_held:
        refusal = stream_slot_or_refusal(user)
        if refusal is not None:
            return refusal
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return with_stream_slot(user, response)


@dataclass(frozen=True)
class _Result:
    value: Any


async def keepalive_while(func: Callable[[], Any]) -> AsyncIterator[str | _Result]:
    """Run ``func`` in the request's worker thread; yield KEEPALIVE every KEEPALIVE_SECONDS until it returns,
    then one ``_Result`` carrying its value (its exception is raised)."""
    task = asyncio.ensure_future(sync_to_async(func)())
    try:
        while True:
            done, _pending = await asyncio.wait({task}, timeout=KEEPALIVE_SECONDS)
            if done:
                yield _Result(task.result())
                return
            yield KEEPALIVE
    finally:
        if not task.done():
            task.cancel()  # the thread finishes its current call; nobody waits for it


# --- sequential work with one event per step (batch_process_stream, prewarm) ------------------------------


async def calls_stream(
    opening: str, calls: Iterable[Callable[[], dict]], *, done: bool = True
) -> AsyncIterator[str]:
    """One event per call (each run in a worker thread, keep-alives while it runs), then ``[DONE]``."""
    yield sse_open(opening)
    for call in calls:
        async for part in keepalive_while(call):
            yield sse_data(part.value) if isinstance(part, _Result) else part
    if done:
        yield DONE_MARKER


_END = object()


async def iterator_stream(
    opening: str,
    iterator_factory: Callable[[], Iterator[Any]],
    to_event: Callable[[Any], dict],
    finish: Callable[[], dict],
    on_error: Callable[[Exception], dict],
) -> AsyncIterator[str]:
    """Events from a sync iterator whose every ``next()`` is slow work (e.g. one embedding), then ``finish()``.

    The iterator is created and advanced in the request's worker thread; an exception ends it with
    ``on_error(exc)`` before the final event, so the client always sees the stream end properly.
    """
    yield sse_open(opening)
    holder: dict[str, Iterator[Any]] = {}

    def advance() -> Any:
        if "it" not in holder:
            holder["it"] = iterator_factory()
        return next(holder["it"], _END)

    while True:
        try:
            value = _END
            async for part in keepalive_while(advance):
                if isinstance(part, _Result):
                    value = part.value
                else:
                    yield part
        except Exception as exc:
            logger.warning("seed stream: %s", exc, exc_info=True)
            yield sse_data(on_error(exc))
            break
        if value is _END:
            break
        yield sse_data(await sync_to_async(to_event)(value))
    yield sse_data(await sync_to_async(finish)())


# --- apply_stream: relay a generation job ---------------------------------------------------------------


@dataclass(frozen=True)
class Rendition:
    """How the seed stream encodes each variant: ``fmt`` at ``quality`` (JPEG/WebP), longest side at most
    ``max_side`` px (0: any size). The stored job keeps its full-size outputs whatever the rendition."""

    fmt: str
    quality: int
    max_side: int

    def fits(self, stored_format: str, width: int, height: int) -> bool:
        """True when the stored file can be streamed as it is (same format, not too large)."""
        return stored_format == self.fmt and (not self.max_side or max(width, height) <= self.max_side)

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        longest = max(width, height)
        if not self.max_side or longest <= self.max_side:
            return width, height
        scale = self.max_side / longest
        return max(1, round(width * scale)), max(1, round(height * scale))

    def encode(self, rgb: np.ndarray) -> bytes:
        height, width = rgb.shape[:2]
        size = self.size_for(width, height)
        if size != (width, height):
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        return encode_image(rgb, self.fmt, quality=self.quality)

    def encode_mask(self, mask: np.ndarray) -> bytes:
        height, width = mask.shape[:2]
        size = self.size_for(width, height)
        if size != (width, height):
            mask = cv2.resize(mask.view(np.uint8), size, interpolation=cv2.INTER_NEAREST).view(bool)
        return encode_mask_png(mask)


@dataclass
class _Relay:
    job_id: uuid.UUID
    rendition: Rendition | None = None
    emitted: set[int] = field(default_factory=set)
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0


def _item_base(job: GenerationJob, item: JobItem) -> dict:
    return image_event(item.index, job.total_items, item.image)


def _variant_bytes(relay: _Relay, job: GenerationJob, variant: Variant) -> tuple[bytes, bytes | None]:
    """The streamed variant (and mask when exported): the stored file as it is when the rendition allows,
    else re-encoded; from the runner's just-encoded buffers when it ran in this process, else storage."""
    recent = recent_outputs.get(variant.file.name, variant.sha256)
    rendition = relay.rendition
    as_stored = rendition is None or rendition.fits(job.output_format, variant.width, variant.height)
    if as_stored:
        data = recent.data if recent is not None else read_file_bytes(variant.file)
    elif recent is not None and recent.rgb is not None:
        data = rendition.encode(recent.rgb)
    else:
        stored = recent.data if recent is not None else read_file_bytes(variant.file)
        decoded = decode_image(stored)  # three channels: a grayscale variant goes out as one again
        data = rendition.encode(output_pixels(decoded.rgb, decoded.is_grayscale))
    mask_data = None
    if job.export_mask and variant.mask_file:
        if as_stored or rendition.size_for(variant.width, variant.height) == (variant.width, variant.height):
            mask_data = recent.mask_png if recent is not None and recent.mask_png else None
            mask_data = mask_data or read_file_bytes(variant.mask_file)
        elif recent is not None and recent.mask is not None:
            mask_data = rendition.encode_mask(recent.mask)
        else:
            mask = decode_image(read_file_bytes(variant.mask_file)).rgb[:, :, 0] > 127
            mask_data = rendition.encode_mask(mask)
    return data, mask_data


def _variant_event(relay: _Relay, job: GenerationJob, item: JobItem, variant: Variant) -> dict:
    names = list(variant.template_names or [])
    data, mask_data = _variant_bytes(relay, job, variant)
    event = {
        **_item_base(job, item),
        "variant_png": b64encode(data),
        "ms": item.ms or 0,
        "template_name": " + ".join(names),
        "template_names": names,
        "variant_id": variant.id.hex,
        "score": variant.score,
        "area": variant.area,
    }
    if mask_data is not None:
        event["mask_png"] = b64encode(mask_data)
    return event


def _skipped_event(relay: _Relay, job: GenerationJob, item: JobItem) -> dict:
    """No template applies to this image (class filter): the image itself, unedited, flagged ``skipped``."""
    image = decode_dataset_image(item.image)
    rendition = relay.rendition
    empty = np.zeros((image.height, image.width), dtype=bool)
    pixels = output_pixels(image.rgb, image.is_grayscale)
    event = {
        **_item_base(job, item),
        "variant_png": b64encode(
            rendition.encode(pixels) if rendition else encode_image(pixels, job.output_format)
        ),
        "ms": item.ms or 0,
        "template_name": "",
        "template_names": [],
        "skipped": True,
    }
    if job.export_mask:
        event["mask_png"] = b64encode(rendition.encode_mask(empty) if rendition else encode_mask_png(empty))
    return event


def _error_event(job: GenerationJob, item: JobItem, error: str) -> dict:
    return {**_item_base(job, item), "error": error or "failed"}


def _item_event(relay: _Relay, job: GenerationJob, item: JobItem, variant: Variant | None) -> dict:
    try:
        if item.status == ItemStatus.SUCCEEDED and variant is not None:
            event = _variant_event(relay, job, item, variant)
        elif item.status == ItemStatus.SKIPPED:
            event = _skipped_event(relay, job, item)
        elif item.status == ItemStatus.SUCCEEDED:
            event = _error_event(job, item, "the variant of this image is missing")
        else:
            event = _error_event(job, item, item.error)
    except Exception as exc:  # a stored file gone missing must not end the stream
        logger.warning("apply_stream: cannot relay item %s of job %s", item.index, job.id, exc_info=True)
        event = _error_event(job, item, f"cannot read the result: {exc}")
    if "error" in event:
        relay.failed += 1
    elif event.get("skipped"):
        relay.skipped += 1
    else:
        relay.succeeded += 1
    relay.emitted.add(item.index)
    return event


def _on_event(relay: _Relay, kind: str, payload: dict) -> tuple[list[dict], bool]:
    """The seed events for one stored job event, and whether the run has ended.

    ``item``: the image's old per-image event (its item, image and stack variant rows are read once);
    ``done``: an error event for every image not relayed (a run that stopped early still answers once for
    every image), then the final summary. Other events say nothing the old clients want.
    """
    if kind == EVENT_ITEM:
        index = payload.get("index")
        if index is None or index in relay.emitted:
            return [], False
        item = JobItem.objects.select_related("image").filter(job_id=relay.job_id, index=index).first()
        if item is None:  # the image was deleted while the job ran
            return [], False
        job = GenerationJob.objects.get(pk=relay.job_id)
        variant = Variant.objects.filter(
            job_id=relay.job_id, image_id=item.image_id, template_key=STACK_TEMPLATE_KEY
        ).first()
        return [_item_event(relay, job, item, variant)], False
    if kind != EVENT_DONE:
        return [], False
    job = GenerationJob.objects.get(pk=relay.job_id)
    events: list[dict] = []
    reason = job.error or f"not processed: the job {job.status}"
    leftovers = JobItem.objects.filter(job_id=relay.job_id).exclude(index__in=relay.emitted)
    for item in leftovers.select_related("image").order_by("index"):
        events.append(_error_event(job, item, reason))
        relay.failed += 1
        relay.emitted.add(item.index)
    events.append(
        {
            "done": True,
            "total": job.total_items,
            "succeeded": relay.succeeded + relay.skipped,
            "failed": relay.failed,
            "skipped": relay.skipped,
            "job_id": job.id.hex,
            "status": job.status,
        }
    )
    return events, True


async def job_relay(job_id: uuid.UUID, *, rendition: Rendition | None = None) -> AsyncIterator[str]:
    """The old apply_stream events of job ``job_id``, as its runner commits each image (see module doc).

    Built on :func:`datasets.jobs.relay.relay_events`: woken by the job channel's listener, it reads the
    stored events after the last one relayed, so none is missed and the database is not polled while the
    job is busy; a keep-alive comment goes out every :data:`KEEPALIVE_SECONDS` of silence and the log is
    re-read every :data:`FALLBACK_SECONDS` without a wake-up (a safety net). ``rendition`` re-encodes the
    variants for the stream (None: as stored).
    """
    relay = _Relay(job_id=job_id, rendition=rendition)
    yield sse_open(f"job {job_id.hex}")
    stored_events = relay_events(
        job_channel(job_id), keepalive_seconds=KEEPALIVE_SECONDS, resync_seconds=FALLBACK_SECONDS
    )
    try:
        async for stored in stored_events:
            if stored is None:
                yield KEEPALIVE
                continue
            events, finished = await sync_to_async(_on_event)(relay, stored.type, stored.payload)
            for event in events:
                yield sse_data(event)
            if finished:
                yield DONE_MARKER
                return
    finally:
        await stored_events.aclose()
