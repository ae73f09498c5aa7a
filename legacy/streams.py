"""Server-sent event streams of the seed API, as async generators (ASGI streams them chunk by chunk;
a sync iterator would be buffered whole by Django's ASGI handler before the first byte).

Wire format of the old tool: one ``data: <compact JSON>`` line and a blank line per event, ``: ...`` comment
lines for the opening and keep-alives (every SSE parser ignores them), ``data: [DONE]`` to end the batch and
apply streams.

``apply_stream`` does not compute anything itself: the request creates a persisted GenerationJob that the
configured runner executes (embedded thread, Celery worker, or inline in tests), and :func:`job_relay`
polls the job's rows (JobItem status, Variant files) and turns each finished item into the old per-image
event. Polling the database rather than listening to in-process events means the relay works whichever
process runs the job, and a client that disconnects only stops the relay, never the job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

from datasets.image_io import decode_stored_image, read_file_bytes
from datasets.models import STACK_TEMPLATE_KEY, GenerationJob, ItemStatus, JobItem, Variant
from imaging.codecs import b64encode, encode_image, encode_mask_png

logger = logging.getLogger(__name__)

#: Seconds between two reads of the job's rows while it runs (a cheap indexed query).
POLL_SECONDS = 0.25
#: A comment goes out after this many silent seconds, so proxies and clients keep the connection open.
KEEPALIVE_SECONDS = 5.0
#: EventSource clients reconnect after this many ms (the relay is idempotent: it starts from the job's rows).
RETRY_MS = 3000

KEEPALIVE = ": keep-alive\n\n"
DONE_MARKER = "data: [DONE]\n\n"


def sse_data(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def sse_open(comment: str) -> str:
    """The first bytes of every stream, sent at once: a comment (ignored by parsers) and the retry delay."""
    return f": {comment}\nretry: {RETRY_MS}\n\n"


def event_stream_response(stream: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


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


@dataclass
class _Relay:
    job_id: uuid.UUID
    emitted: set[int] = field(default_factory=set)
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0


def _item_base(job: GenerationJob, item: JobItem) -> dict:
    return {
        "index": item.index,
        "total": job.total_items,
        "filename": item.image.filename,
        "image_id": item.image.id.hex,
    }


def _variant_event(job: GenerationJob, item: JobItem, variant: Variant) -> dict:
    names = list(variant.template_names or [])
    event = {
        **_item_base(job, item),
        "variant_png": b64encode(read_file_bytes(variant.file)),
        "ms": item.ms or 0,
        "template_name": " + ".join(names),
        "template_names": names,
        "variant_id": variant.id.hex,
        "score": variant.score,
        "area": variant.area,
    }
    if job.export_mask and variant.mask_file:
        event["mask_png"] = b64encode(read_file_bytes(variant.mask_file))
    return event


def _skipped_event(job: GenerationJob, item: JobItem) -> dict:
    """No template applies to this image (class filter): the image itself, unedited, flagged ``skipped``."""
    image = decode_stored_image(item.image.file)
    event = {
        **_item_base(job, item),
        "variant_png": b64encode(encode_image(image.rgb, job.output_format)),
        "ms": item.ms or 0,
        "template_name": "",
        "template_names": [],
        "skipped": True,
    }
    if job.export_mask:
        event["mask_png"] = b64encode(encode_mask_png(np.zeros((image.height, image.width), dtype=bool)))
    return event


def _error_event(job: GenerationJob, item: JobItem, error: str) -> dict:
    return {**_item_base(job, item), "error": error or "failed"}


def _item_event(relay: _Relay, job: GenerationJob, item: JobItem, variant: Variant | None) -> dict:
    try:
        if item.status == ItemStatus.SUCCEEDED and variant is not None:
            event = _variant_event(job, item, variant)
        elif item.status == ItemStatus.SKIPPED:
            event = _skipped_event(job, item)
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


def _poll(relay: _Relay) -> tuple[list[dict], bool]:
    """Events for the items finished since the last poll, and whether the job has ended.

    The job row is read before the items: once it reads terminal, every item it finished is visible.
    """
    job = GenerationJob.objects.get(pk=relay.job_id)
    done = set(
        JobItem.objects.filter(job_id=relay.job_id, status__in=JobItem.DONE).values_list("index", flat=True)
    )
    fresh = sorted(done - relay.emitted)
    events: list[dict] = []
    if fresh:
        items = list(
            JobItem.objects.filter(job_id=relay.job_id, index__in=fresh)
            .select_related("image")
            .order_by("index")
        )
        variants = {
            v.image_id: v
            for v in Variant.objects.filter(
                job_id=relay.job_id, image_id__in=[i.image_id for i in items], template_key=STACK_TEMPLATE_KEY
            )
        }
        events = [_item_event(relay, job, item, variants.get(item.image_id)) for item in items]
    if not job.is_terminal:
        return events, False
    # A run that stopped early (failed, canceled) still answers once for every image.
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


async def job_relay(job_id: uuid.UUID) -> AsyncIterator[str]:
    """The old apply_stream events of job ``job_id``, as its runner finishes each image (see module doc)."""
    relay = _Relay(job_id=job_id)
    yield sse_open(f"job {job_id.hex}")
    last_sent = time.monotonic()
    while True:
        events, finished = await sync_to_async(_poll)(relay)
        for event in events:
            yield sse_data(event)
        if events:
            last_sent = time.monotonic()
        if finished:
            yield DONE_MARKER
            return
        if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
            yield KEEPALIVE
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)
