"""Step 4: a dataset's job history, the job page (cancel, retry), its live SSE stream, and the tiles' thumbnails.

Thin views (see ``frontend.views``): parse, call one service or selector, render.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from datasets.jobs.events import (
    InvalidEventId,
    check_last_event_ids,
    invalid_event_id_response,
    job_channel,
    job_last_event_id,
    sse_response,
)
from datasets.jobs.relay import parse_event_id
from datasets.jobs.services import job_cancel, job_retry_failed
from datasets.selectors import (
    dataset_get_for_user,
    job_get_for_user,
    job_list_for_user,
    variant_get_for_user,
)
from datasets.services.thumbnails import thumbnail_read, variant_thumbnail_ensure
from frontend import live, presenters
from imaging.errors import ImagingError
from samsite.common.errors import ServiceError
from samsite.common.throttles import JOBS, scoped_throttle

logger = logging.getLogger(__name__)


@login_required
@require_GET
def dataset_jobs(request, dataset_id):
    dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
    jobs = list(job_list_for_user(user=request.user, dataset=dataset))
    context = presenters.workspace_context(dataset, step="jobs")
    context["jobs"] = jobs
    return render(request, "frontend/jobs.html", context)


@login_required
@require_GET
def job_detail(request, job_id):
    job = job_get_for_user(user=request.user, job_id=job_id)
    # The event id first, then the state: an event in between is replayed (tiles are swapped by id, so a
    # replay is harmless), never lost.
    last_event_id = job_last_event_id(job)
    job.refresh_from_db()
    context = presenters.workspace_context(job.dataset, step="jobs")
    context.update(presenters.job_context(job))
    context.update(
        {
            "last_event_id": last_event_id,
            "jobs": list(job_list_for_user(user=request.user, dataset=job.dataset)[:20]),
        }
    )
    return render(request, "frontend/job.html", context)


def _job_action(request, job_id, action, success_message: str):
    """Run one job service on the user's job; its refusal becomes a page message, never an error page."""
    job = job_get_for_user(user=request.user, job_id=job_id)
    try:
        action(job=job)
        messages.info(request, success_message)
    except ServiceError as exc:
        messages.error(request, exc.message)
    return redirect("ui-job", job_id=job.public_id)


@login_required
@require_POST
def job_cancel_view(request, job_id):
    return _job_action(
        request, job_id, job_cancel, "Cancel requested: the job stops after the current image."
    )


@login_required
@require_POST
@scoped_throttle(JOBS)
def job_retry_view(request, job_id):
    return _job_action(request, job_id, job_retry_failed, "The failed images are queued again.")


@login_required
def job_events(request, job_id):
    """The job page's SSE stream (session auth): the job's events after ``lastEventId`` (query or header),
    rendered as HTML fragments by ``frontend.live``. The ownership accessor runs first (404 for a foreign job)."""
    job = job_get_for_user(user=request.user, job_id=job_id)
    try:
        check_last_event_ids(request)
    except InvalidEventId as exc:
        return invalid_event_id_response(exc)
    last = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId")
    after = parse_event_id(last, job_channel(job.id))
    return sse_response(request, live.page_event_stream(job.id, after=after))


@login_required
@require_GET
def variant_thumbnail(request, variant_id):
    """The job page's tile image: a 320 px thumbnail of the variant (made once, then read from storage).

    Ownership as for the full file (another user's variant is a 404). The name carries the content hash, so
    the browser may keep it for good.
    """
    variant = variant_get_for_user(user=request.user, variant_id=variant_id)
    try:
        thumbnail = variant_thumbnail_ensure(variant=variant)
        data = thumbnail_read(thumbnail=thumbnail)
    except (ImagingError, OSError) as exc:
        logger.warning("no thumbnail for variant %s: %s", variant.id, exc)
        return JsonResponse(
            {"error": "thumbnail_unavailable", "detail": "the variant's file could not be read"}, status=404
        )
    response = HttpResponse(data, content_type=thumbnail.content_type)
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response
