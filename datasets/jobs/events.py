"""Live job events over django-eventstream: one channel per job, ``job-<hex id>``.

Read permission goes through the same ownership accessor as every other interface, so alice cannot
subscribe to bob's job. Events are stored (DjangoModelStorage) before they are pushed, so a client that
connects with ``lastEventId`` replays everything it missed.

Event types and their JSON payloads (sent by ``datasets.generation`` and ``datasets.services.jobs``):

``status``  ``{"job_id", "status", "counters"}`` on every job transition (queued, running, succeeded,
            failed, canceled); ``counters`` is ``job_counters(job)``.
``item``    one per processed image: ``{"job_id", "index", "total", "image_id", "filename", "status"
            ("succeeded" | "failed" | "skipped"), "ms", "template_ids", "template_names", "score", "area",
            "variant_id", "variant_url", "mask_url", "variants": [...], "counters", "error"?}``; the
            top-level variant fields describe the item's first variant (the only one in stack mode).
``done``    last event of a run: ``{"job_id", "status", "total", "succeeded", "failed", "skipped",
            "variant_count", "download_url", "error"}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.http import Http404
from django.urls import reverse
from django_eventstream import get_current_event_id
from django_eventstream.channelmanager import DefaultChannelManager
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
    ``signals.job_event`` receivers (the page's HTML fragments) are notified once the transaction commits.
    Outside a transaction both happen at once. Delivery failures are logged, never raised into the job.
    """
    data = dict(payload)
    channel = job_channel(job.id)
    encoded = json.dumps(data, cls=DjangoJSONEncoder)
    storage = get_storage()
    stored = storage.append_event(channel, event_type, encoded) if storage else None

    def _publish() -> None:
        from datasets.models import GenerationJob
        from datasets.signals import job_event

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


def job_counters(job) -> dict:
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


def status_payload(job) -> dict:
    return {"job_id": job.id.hex, "status": job.status, "counters": job_counters(job)}


def done_payload(job) -> dict:
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
