"""The job page's live stream: the job's JSON events, rendered into HTML fragments here, in the web process.

Workers (the embedded thread, Celery workers on other machines) only emit the typed JSON events of
``datasets.jobs.events``. The page's SSE endpoint relays the job's stored events (``datasets.jobs.relay``: woken
by this process's pushes or by Redis, never polling) and renders each into out-of-band fragments
(``hx-swap-oob``) keyed by element id, sent as ``html-<type>`` with the JSON event's own id, so the page resumes
with the same ``lastEventId`` sequence as API clients. Fragments replace elements by id, so a replayed event (the
page render raced an event) is harmless. Fragments show the job's state at render time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.template.loader import render_to_string
from django_eventstream.utils import sse_encode_event

from datasets.jobs.events import EVENT_DONE, EVENT_ITEM, EVENT_STATUS, job_channel
from datasets.jobs.relay import StoredEvent, relay_events
from datasets.models import GenerationJob, ItemStatus
from datasets.selectors import job_get_internal, job_items_failed
from frontend import presenters

logger = logging.getLogger(__name__)

HTML_EVENT_PREFIX = "html-"


def _render_params(job: GenerationJob) -> str:
    return render_to_string(
        "frontend/partials/job_params.html",
        {
            "job": job,
            "snapshot": presenters.snapshot_rows(job),
            "timings": presenters.timing_rows(job),
            "oob": True,
        },
    )


def render_status(job: GenerationJob) -> str:
    context = {"job": job, "progress": presenters.job_progress(job), "oob": True}
    parts = [
        render_to_string("frontend/partials/job_progress.html", context),
        _render_params(job),
        render_to_string("frontend/partials/job_status_cell.html", {"job": job}),
    ]
    return "\n".join(parts)


def render_item(job: GenerationJob, payload: dict) -> str:
    # Every figure of the page follows the item: progress, and the Parameters card (segmenter, encoder
    # calls, cached embeddings, timings), which would otherwise stay at what the page was rendered with.
    parts = [
        render_to_string(
            "frontend/partials/job_progress.html",
            {"job": job, "progress": presenters.job_progress(job), "oob": True},
        ),
        _render_params(job),
        render_to_string("frontend/partials/job_status_cell.html", {"job": job}),
    ]
    index = payload.get("index")
    tile = presenters.item_tile(job, index=index) if isinstance(index, int) else None
    if tile is not None:
        parts.append(
            render_to_string(
                "frontend/partials/item_tile.html",
                {"item": tile["item"], "variants": tile["variants"], "oob": True},
            )
        )
    if payload.get("status") == ItemStatus.FAILED:
        parts.append(
            render_to_string(
                "frontend/partials/job_errors.html", {"failed_items": job_items_failed(job=job), "oob": True}
            )
        )
    return "\n".join(parts)


def render_done(job: GenerationJob) -> str:
    return "\n".join(
        [
            render_status(job),
            render_to_string(
                "frontend/partials/job_errors.html", {"failed_items": job_items_failed(job=job), "oob": True}
            ),
        ]
    )


def render_event(job_id, event: StoredEvent) -> str | None:
    """The page's fragments for one stored JSON event of the job (None for an event the page ignores)."""
    fresh = job_get_internal(job_id=job_id)
    if fresh is None:
        return None
    if event.type == EVENT_STATUS:
        return render_status(fresh)
    if event.type == EVENT_ITEM:
        return render_item(fresh, event.payload)
    if event.type == EVENT_DONE:
        return render_done(fresh)
    return None


_OPEN = ":" + " " * 2048 + "\n\nevent: stream-open\ndata:\n\n"
_KEEPALIVE = "event: keep-alive\ndata:\n\n"


async def page_event_stream(job_id, *, after: int) -> AsyncIterator[str]:
    """The SSE body of the job page: ``html-status`` / ``html-item`` / ``html-done`` after event ``after``."""
    render = sync_to_async(render_event, thread_sensitive=False)
    yield _OPEN
    async for event in relay_events(job_channel(job_id), after=after):
        if event is None:
            yield _KEEPALIVE
            continue
        try:
            html = await render(job_id, event)
        except Exception:  # a template bug must not end the stream; the next event renders the state again
            logger.exception("could not render the %s event of job %s", event.type, job_id)
            continue
        if html is not None:
            yield sse_encode_event(
                HTML_EVENT_PREFIX + event.type, html, event_id=event.event_id, json_encode=False
            )
