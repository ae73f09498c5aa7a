"""HTML fragments for the job page, sent on the job's page channel (``jobpage-<hex>``).

``datasets.signals.job_event`` fires after commit for every ``status``, ``item`` and ``done`` event. For each
we render out-of-band fragments (``hx-swap-oob``) keyed by element id and send them as ``html-<type>`` on the
page channel (``json_encode=False``), which has its own ``lastEventId`` sequence; API clients of the JSON
channel never see markup. Fragments replace elements by id, so a replayed event (page render raced an event)
is harmless.
"""

from __future__ import annotations

import logging

from django.template.loader import render_to_string
from django_eventstream import send_event

from datasets.events import EVENT_DONE, EVENT_ITEM, EVENT_STATUS, job_page_channel
from datasets.models import GenerationJob, ItemStatus
from datasets.selectors import job_items
from frontend import presenters

logger = logging.getLogger(__name__)

HTML_EVENT_PREFIX = "html-"


def _failed_items(job: GenerationJob) -> list:
    return list(job_items(job=job).filter(status=ItemStatus.FAILED))


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
                "frontend/partials/job_errors.html", {"failed_items": _failed_items(job), "oob": True}
            )
        )
    return "\n".join(parts)


def render_done(job: GenerationJob) -> str:
    return "\n".join(
        [
            render_status(job),
            render_to_string(
                "frontend/partials/job_errors.html", {"failed_items": _failed_items(job), "oob": True}
            ),
        ]
    )


def on_job_event(sender, *, job: GenerationJob, event_type: str, payload: dict, **kwargs) -> None:
    """Receiver of ``datasets.signals.job_event``: render and send the page's fragment for this event."""
    try:
        fresh = GenerationJob.objects.select_related("dataset").get(pk=job.pk)
    except GenerationJob.DoesNotExist:
        return
    if event_type == EVENT_STATUS:
        html = render_status(fresh)
    elif event_type == EVENT_ITEM:
        html = render_item(fresh, payload)
    elif event_type == EVENT_DONE:
        html = render_done(fresh)
    else:
        return
    send_event(job_page_channel(fresh.id), HTML_EVENT_PREFIX + event_type, html, json_encode=False)
