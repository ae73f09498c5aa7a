"""Live job events: one typed contract, one channel per job (``job-<hex id>``), stored before they are pushed.

The payloads are the TypedDicts below; every consumer is derived from them: the REST event stream sends them as
JSON, the job page renders them into HTML in the web process (``frontend/live.py``), and the seed-compatible
stream turns them into the old wire format. Workers, wherever they run, only ever emit these JSON events.

``status``  :class:`StatusEvent` on every job transition (queued, running, succeeded, failed, canceled).
``item``    :class:`ItemEvent`, one per processed image; the top-level variant fields describe the item's first
            variant (the only one in stack mode).
``done``    :class:`DoneEvent`, the last event of a run, sent exactly once per run (a compare-and-set on the
            job row decides which worker sends it).

Read permission goes through the same ownership accessor as every other interface, for every channel a request
ends up subscribed to. Events are stored (:class:`JobEventStorage`) in the transaction that makes the change and
pushed after commit, so a client that connects with ``lastEventId`` replays everything it missed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import NotRequired, TypedDict

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.http import Http404
from django.urls import reverse
from django_eventstream import get_current_event_id
from django_eventstream.channelmanager import DefaultChannelManager
from django_eventstream.storage import DjangoModelStorage
from django_eventstream.utils import get_storage

from datasets.selectors import job_get_for_user

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "job-"
#: The job page's HTML fragments (frontend/live.py) go on their own channel, so API clients of the JSON
#: channel never receive markup; both channels are read-checked through the same ownership accessor.
PAGE_CHANNEL_PREFIX = "jobpage-"
EVENT_STATUS = "status"
EVENT_ITEM = "item"
EVENT_DONE = "done"


class Counters(TypedDict):
    total: int
    processed: int
    succeeded: int
    failed: int
    skipped: int
    variants: int
    encoder_calls: int
    cache_hits: int


class StatusEvent(TypedDict):
    job_id: str
    status: str
    counters: Counters
    segmenter: str
    queue_position: int | None


class VariantEntry(TypedDict):
    id: str
    template_key: str
    template_ids: list[str]
    template_names: list[str]
    score: float
    area: int
    width: int
    height: int
    sha256: str
    url: str | None
    mask_url: str | None
    stability: float | None
    flags: list[dict]


class ItemEvent(TypedDict):
    job_id: str
    index: int
    total: int
    image_id: str
    filename: str
    status: str
    ms: int | None
    cache_hit: bool
    template_ids: list[str]
    template_names: list[str]
    score: float | None
    area: int | None
    variant_id: str | None
    variant_url: str | None
    mask_url: str | None
    variants: list[VariantEntry]
    counters: Counters
    error: NotRequired[str]


class DoneEvent(TypedDict):
    job_id: str
    status: str
    total: int
    succeeded: int
    failed: int
    skipped: int
    variant_count: int
    download_url: str
    error: str


class JobEventStorage(DjangoModelStorage):
    """django-eventstream's model storage without its trimming: upstream deletes old events inside every
    ``append_event``, i.e. inside the job's item transaction, and after 24 hours. Job events are kept as long as
    their job is (deleted with it, see ``job_events_delete``) so a job's history replays whatever its age."""

    def trim_event_log(self) -> None:
        return None


def job_channel(job_id) -> str:
    hex_id = job_id.hex if hasattr(job_id, "hex") else str(job_id)
    return f"{CHANNEL_PREFIX}{hex_id}"


def job_page_channel(job_id) -> str:
    hex_id = job_id.hex if hasattr(job_id, "hex") else str(job_id)
    return f"{PAGE_CHANNEL_PREFIX}{hex_id}"


def job_id_from_channel(channel: str) -> str | None:
    """The job id a channel name belongs to, or None for a channel that is not a job's."""
    for prefix in (CHANNEL_PREFIX, PAGE_CHANNEL_PREFIX):
        if channel.startswith(prefix):
            return channel[len(prefix) :]
    return None


class JobChannelManager(DefaultChannelManager):
    """Every channel a request is subscribed to must be a job channel its user owns (JSON or page channel)."""

    def can_read_channel(self, user, channel: str) -> bool:
        job_id = job_id_from_channel(channel)
        if user is None or job_id is None:
            return False
        try:
            job_get_for_user(user=user, job_id=job_id)
        except Http404:
            return False
        return True


def job_last_event_id(job, *, channel: str | None = None) -> str:
    """The id of the latest stored event of the job's channel (``job-<hex>:<n>``), for ``lastEventId`` resumes.

    A page renders the job's state, then connects with this id, so nothing sent in between is lost.
    ``channel`` picks another of the job's channels (e.g. ``job_page_channel(job.id)``).
    """
    return get_current_event_id([channel or job_channel(job.id)])


def job_first_event_id(job) -> str:
    """``job-<hex>:0``: connecting with it replays the job's whole stored event history."""
    return f"{job_channel(job.id)}:0"


def send_job_event(job, event_type: str, payload: Mapping) -> None:
    """Store ``payload`` as an event of the job's channel in the caller's transaction; push it after commit.

    The event row is written by django-eventstream's storage *inside* the transaction that made the change
    (a transactional outbox): the change and its event commit together or not at all, so a runner killed
    right after a commit can never leave an item without its ``item`` event, and a rolled-back change never
    reaches a client. Listeners (this process's, or every process's through Redis) and the
    ``signals.job_event`` receivers (the CLI's progress bar) are notified once the transaction commits.
    Outside a transaction both happen at once. Delivery failures are logged, never raised into the job.
    """
    data = dict(payload)
    channel = job_channel(job.id)
    encoded = json.dumps(data, cls=DjangoJSONEncoder)
    storage = get_storage()
    stored = storage.append_event(channel, event_type, encoded) if storage else None

    def _publish() -> None:
        from datasets.jobs.signals import job_event
        from datasets.models import GenerationJob

        try:
            _push_to_listeners(channel, event_type, encoded, stored)
        except Exception:
            logger.exception("could not push %s event of job %s", event_type, job.id)
        for receiver, result in job_event.send_robust(
            sender=GenerationJob, job=job, event_type=event_type, payload=data
        ):
            if isinstance(result, Exception):
                logger.error("job_event receiver %r failed: %r", receiver, result, exc_info=result)

    transaction.on_commit(_publish)


def _push_to_listeners(channel: str, event_type: str, encoded: str, stored) -> None:
    """The publishing half of ``django_eventstream.send_event`` for an event already in storage.

    Mirrors django-eventstream 5.3.x (pinned): Redis pub/sub when EVENTSTREAM_REDIS is set, else this
    process's listeners; then GRIP, which is a no-op without a proxy configured.
    """
    from django_eventstream import eventstream
    from django_eventstream.event import Event
    from django_eventstream.utils import publish_event
    from django_eventstream.views import get_listener_manager

    event = stored or Event(channel, event_type, encoded)
    pub_id = str(stored.id) if stored else None
    pub_prev_id = str(stored.id - 1) if stored else None
    if eventstream.redis_client:
        message = {"channel": channel, "event_type": event_type, "data": encoded, "pub_id": pub_id}
        eventstream.redis_client.publish("events_channel", json.dumps(message))
    else:
        get_listener_manager().add_to_queues(channel, event)
    publish_event(channel, event_type, encoded, pub_id, pub_prev_id)


def job_events_delete(job_ids) -> None:
    """Delete the stored events (and counters) of these jobs' channels; called when the jobs are deleted."""
    from django_eventstream.models import Event, EventCounter

    channels = [name for job_id in job_ids for name in (job_channel(job_id), job_page_channel(job_id))]
    Event.objects.filter(channel__in=channels).delete()
    EventCounter.objects.filter(name__in=channels).delete()


def job_counters(job) -> Counters:
    """The progress counters every status/item event carries."""
    return {
        "total": job.total_items,
        "processed": job.processed_items,
        "succeeded": job.succeeded_items,
        "failed": job.failed_items,
        "skipped": job.skipped_items,
        "variants": job.variant_count,
        "encoder_calls": job.encoder_calls,
        "cache_hits": job.cache_hits,
    }


def status_payload(job, *, queue_position: int | None = None) -> StatusEvent:
    return {
        "job_id": job.id.hex,
        "status": job.status,
        "counters": job_counters(job),
        "segmenter": job.segmenter,
        "queue_position": queue_position,
    }


def done_payload(job) -> DoneEvent:
    return {
        "job_id": job.id.hex,
        "status": job.status,
        "total": job.total_items,
        "succeeded": job.succeeded_items,
        "failed": job.failed_items,
        "skipped": job.skipped_items,
        "variant_count": job.variant_count,
        "download_url": reverse("api-job-download", args=[job.id.hex]),
        "error": job.error,
    }


def variant_entry(variant) -> VariantEntry:
    return {
        "id": variant.id.hex,
        "template_key": variant.template_key,
        "template_ids": list(variant.template_ids),
        "template_names": list(variant.template_names),
        "score": round(variant.score, 4),
        "area": variant.area,
        "width": variant.width,
        "height": variant.height,
        "sha256": variant.sha256,
        # An annotate job's variants carry a mask only.
        "url": reverse("api-variant-file", args=[variant.id.hex]) if variant.file else None,
        "mask_url": reverse("api-variant-mask", args=[variant.id.hex]) if variant.mask_file else None,
        "stability": variant.stability,
        "flags": list(variant.flags or []),
    }


def item_payload(job, item, variants) -> ItemEvent:
    """The ``item`` event of one processed image, from its committed item and variants."""
    entries = [variant_entry(variant) for variant in variants]
    template_ids: list[str] = []
    template_names: list[str] = []
    for entry in entries:
        for template_id, name in zip(entry["template_ids"], entry["template_names"], strict=False):
            if template_id not in template_ids:
                template_ids.append(template_id)
                template_names.append(name)
    first = entries[0] if entries else None
    payload: ItemEvent = {
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
    if item.status == "failed":
        payload["error"] = item.error
    return payload


# --- Serving event streams ---------------------------------------------------------------------------------

#: Query parameters django-eventstream would honour but that must never reach it: ``es-meta`` is a token that
#: replaces the request's user and channel list (signed with SECRET_KEY), ``channel`` adds channels,
#: ``recover`` and ``link`` belong to a GRIP proxy (Pushpin/Fanout), which this deployment does not have
#: (``recover=true`` read ``request.grip``: a 500).
_UNTRUSTED_STREAM_PARAMS = ("es-meta", "channel", "channels", "recover", "link")

#: One ``<channel>:<sequence>`` part of an event id (django-eventstream joins a part per channel with ",").
_EVENT_ID_PART = re.compile(r"[^:,\s]{1,200}:[0-9]{1,18}")


class InvalidEventId(ValueError):
    """A ``lastEventId`` / ``Last-Event-ID`` that is not an id this server sent."""


def check_last_event_ids(request) -> None:
    """Raise InvalidEventId unless every ``lastEventId`` and the ``Last-Event-ID`` header are event ids of the
    form this server sends (``<channel>:<n>[,<channel>:<n>...]``). Empty values mean "from the start"."""
    values = [request.META.get("HTTP_LAST_EVENT_ID") or "", *request.GET.getlist("lastEventId")]
    for value in values:
        if value and not all(_EVENT_ID_PART.fullmatch(part) for part in value.split(",")):
            raise InvalidEventId(
                "lastEventId / Last-Event-ID must be an event id this stream sent (<channel>:<number>)"
            )


def invalid_event_id_response(exc: InvalidEventId):
    from django.http import JsonResponse

    return JsonResponse({"error": "invalid_event_id", "detail": str(exc), "field": "lastEventId"}, status=400)


def strip_stream_overrides(request) -> None:
    """Remove the query parameters by which a client could choose another user or other channels."""
    if any(name in request.GET for name in _UNTRUSTED_STREAM_PARAMS):
        query = request.GET.copy()
        for name in _UNTRUSTED_STREAM_PARAMS:
            query.pop(name, None)
        request.GET = query


class TooManyStreams(Exception):
    """The user already holds ``SSE_MAX_CONNECTIONS_PER_USER`` open event streams."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} live event streams may be open at once; close a tab or wait")
        self.limit = limit


def _slot_key(user_id) -> str:
    return f"sse-open:{user_id}"


def stream_slot_acquire(user) -> None:
    """Reserve one more open stream for ``user`` with an atomic shared counter (every process sees it), then
    check it: beyond SSE_MAX_CONNECTIONS_PER_USER the reservation is given back and TooManyStreams raised, so N
    parallel requests get exactly the limit. Released by ``stream_slot_release``; a count leaked by a crashed
    process expires SSE_SLOT_TTL_SECONDS after the user's last stream opened."""
    from django.conf import settings

    from samsite.common.counters import counter_add

    count = counter_add(_slot_key(user.pk), ttl=settings.SSE_SLOT_TTL_SECONDS, refresh=True)
    if count > settings.SSE_MAX_CONNECTIONS_PER_USER:
        stream_slot_release(user)
        raise TooManyStreams(settings.SSE_MAX_CONNECTIONS_PER_USER)


def stream_slot_release(user) -> None:
    from samsite.common.counters import counter_subtract

    counter_subtract(_slot_key(user.pk))


def too_many_streams_response(exc: TooManyStreams):
    from django.http import JsonResponse

    from datasets.jobs.serializers import TooManyStreamsSerializer  # it imports this module

    body = {
        "error": "too_many_streams",
        "detail": f"{exc} (SSE_MAX_CONNECTIONS_PER_USER)",
        "limit": exc.limit,
        "setting": "SSE_MAX_CONNECTIONS_PER_USER",
    }
    return JsonResponse(TooManyStreamsSerializer(body).data, status=429)


async def _holding_slot(user, content):
    from asgiref.sync import sync_to_async

    try:
        async for chunk in content:
            yield chunk
    finally:
        await sync_to_async(stream_slot_release, thread_sensitive=False)(user)


def with_stream_slot(user, response):
    """Hold one of ``user``'s stream slots for as long as ``response`` (an async streaming one) is being sent."""
    response.streaming_content = _holding_slot(user, response.streaming_content)
    return response


def sse_response(request, content):
    """A ``text/event-stream`` response over the async iterator ``content``, counted in the user's stream limit
    (429 JSON beyond it)."""
    from django.http import StreamingHttpResponse

    try:
        stream_slot_acquire(request.user)
    except TooManyStreams as exc:
        return too_many_streams_response(exc)
    response = StreamingHttpResponse(content, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return with_stream_slot(request.user, response)
