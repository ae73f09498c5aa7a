"""Generation jobs: create (snapshot + one item per image), cancel, retry failed items, requeue orphans.

Every state change of a job goes through here or through ``datasets.generation`` (which runs it); both follow
the transitions documented on ``GenerationJob`` and ``JobItem``, send their events after commit, and hand
work to the runner (``datasets.runner``) after commit, so a runner never sees an uncommitted job.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from datasets.events import EVENT_DONE, EVENT_STATUS, done_payload, send_job_event, status_payload
from datasets.models import (
    ComposeMode,
    Dataset,
    GenerationJob,
    ItemStatus,
    JobItem,
    JobSource,
    JobStatus,
    OutputFormat,
)
from imaging.errors import EditValidationError, PointValidationError
from samsite.errors import ServiceError
from templates_app.models import Template
from templates_app.specs import template_snapshot

logger = logging.getLogger(__name__)

#: A running job whose heartbeat is older than this is presumed dead (its runner crashed or was killed).
#: Heartbeats are written after every image, so this must exceed the slowest image (vit_h on CPU: ~60 s).
STALE_AFTER = timedelta(minutes=5)


def job_create(
    *,
    dataset: Dataset,
    owner: AbstractBaseUser,
    templates: Sequence[tuple[Template, Mapping | None]] | None = None,
    compose: str = ComposeMode.STACK,
    output_format: str = OutputFormat.PNG,
    export_mask: bool = False,
    source: str = JobSource.API,
    strict_edits: bool = True,
) -> GenerationJob:
    """Create a queued job over every image of ``dataset`` and hand it to the runner after commit.

    ``templates`` lists ``(template, edits)`` pairs; ``edits`` None means the template's default edits.
    None (the argument) means all the dataset's templates with their default edits. Whatever the order
    given, templates are applied in their save order (``Template.position``), as stacking requires.
    The job keeps a snapshot of templates, points and edits, so later template changes do not alter it.
    One JobItem per image, in upload order. ``strict_edits`` False ignores unknown edit keys (seed API).

    Raises ServiceError: ``invalid_compose``, ``invalid_format``, ``invalid_source``, ``no_templates``,
    ``invalid_template`` (another dataset's template; ``index``), ``duplicate_template`` (``index``),
    ``invalid_edits`` (``field``, ``template_id``), ``invalid_points`` (``template_id``).
    A dataset without images gives a job with no items, which succeeds at once.
    """
    if compose not in ComposeMode.values:
        raise ServiceError("invalid_compose", f"compose must be one of {', '.join(ComposeMode.values)}")
    if output_format not in OutputFormat.values:
        raise ServiceError("invalid_format", f"format must be one of {', '.join(OutputFormat.values)}")
    if source not in JobSource.values:
        raise ServiceError("invalid_source", f"source must be one of {', '.join(JobSource.values)}")
    if dataset.owner_id != owner.pk:
        # Callers resolve the dataset through dataset_get_for_user; this is the belt to those braces.
        raise ServiceError("dataset_not_found", "dataset not found", status=404)

    if templates is None:
        chosen: list[tuple[Template, Mapping | None]] = [
            (t, None) for t in dataset.templates.order_by("position")
        ]
    else:
        chosen = list(templates)
    if not chosen:
        raise ServiceError("no_templates", "the dataset has no templates to apply")

    seen: set = set()
    for index, (template, _edits) in enumerate(chosen):
        if template.dataset_id != dataset.pk:
            raise ServiceError("invalid_template", "template is not one of this dataset's", index=index)
        if template.pk in seen:
            raise ServiceError("duplicate_template", "template listed twice", index=index)
        seen.add(template.pk)

    snapshots = []
    for template, edits in sorted(chosen, key=lambda pair: (pair[0].position, pair[0].created)):
        try:
            snapshots.append(template_snapshot(template, edits, strict=strict_edits))
        except EditValidationError as exc:
            raise ServiceError(
                "invalid_edits", str(exc), field=exc.field, template_id=template.id.hex
            ) from exc
        except PointValidationError as exc:
            raise ServiceError("invalid_points", str(exc), template_id=template.id.hex) from exc

    with transaction.atomic():
        job = GenerationJob.objects.create(
            dataset=dataset,
            owner=owner,
            compose=compose,
            output_format=output_format,
            export_mask=export_mask,
            source=source,
            templates_snapshot=snapshots,
        )
        image_ids = list(dataset.images.order_by("position").values_list("pk", flat=True))
        JobItem.objects.bulk_create(
            [JobItem(job=job, image_id=image_id, index=index) for index, image_id in enumerate(image_ids)],
            batch_size=500,
        )
        job.total_items = len(image_ids)
        job.save(update_fields=["total_items", "updated"])
        send_job_event(job, EVENT_STATUS, status_payload(job))
        _enqueue_on_commit(job)
    return job


def job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Cancel a job: a queued one at once (queued -> canceled); a running one between two images (the runner
    sees ``cancel_requested`` and moves it running -> canceled, keeping the variants made so far).

    Raises ServiceError ``job_not_cancelable`` (409) when the job already ended.
    """
    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if locked.status == JobStatus.QUEUED:
            locked.status = JobStatus.CANCELED
            locked.finished_at = timezone.now()
            locked.save(update_fields=["status", "finished_at", "updated"])
            send_job_event(locked, EVENT_STATUS, status_payload(locked))
            send_job_event(locked, EVENT_DONE, done_payload(locked))
        elif locked.status == JobStatus.RUNNING:
            if not locked.cancel_requested:
                locked.cancel_requested = True
                locked.save(update_fields=["cancel_requested", "updated"])
        else:
            raise ServiceError("job_not_cancelable", f"the job already {locked.status}", status=409)
    return locked


def job_retry_failed(*, job: GenerationJob) -> GenerationJob:
    """Queue an ended job again: its failed items go back to pending (failed -> pending), and the runner
    processes every item not yet done, so a canceled job also resumes where it stopped. Variants already
    made are kept; counters are adjusted in the same transaction.

    Raises ServiceError ``job_not_finished`` (409) while it is queued or running, ``nothing_to_retry`` (409)
    when every item already succeeded or was skipped.
    """
    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if not locked.is_terminal:
            raise ServiceError("job_not_finished", f"the job is still {locked.status}", status=409)
        retried = locked.items.filter(status=ItemStatus.FAILED).update(status=ItemStatus.PENDING, error="")
        remaining = locked.items.exclude(status__in=JobItem.DONE).count()
        if remaining == 0:
            raise ServiceError("nothing_to_retry", "no failed or unfinished items", status=409)
        locked.failed_items = max(0, locked.failed_items - retried)
        locked.status = JobStatus.QUEUED
        locked.error = ""
        locked.cancel_requested = False
        locked.finished_at = None
        locked.save(
            update_fields=["failed_items", "status", "error", "cancel_requested", "finished_at", "updated"]
        )
        send_job_event(locked, EVENT_STATUS, status_payload(locked))
        _enqueue_on_commit(locked)
    return locked


def job_delete(*, job: GenerationJob) -> None:
    """Delete an ended job with its items and variants; their stored files go after commit.

    Raises ServiceError ``job_not_finished`` (409) while it is queued or running (cancel it first).
    """
    from datasets.models import Variant
    from datasets.services.datasets import delete_stored_files

    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if not locked.is_terminal:
            raise ServiceError("job_not_finished", f"the job is still {locked.status}", status=409)
        names = [
            name
            for row in Variant.objects.filter(job=locked).values_list("file", "mask_file")
            for name in row
            if name
        ]
        locked.delete()
        transaction.on_commit(lambda: delete_stored_files(names))


def jobs_requeue_orphaned(*, stale_after: timedelta = STALE_AFTER) -> list[GenerationJob]:
    """Put back in the queue the jobs left running by a runner that died (running -> queued).

    A running job is orphaned when its worker ran on this host and that process no longer exists, or when
    its heartbeat is older than ``stale_after`` (a worker elsewhere, or one that hangs). Its items that were
    running are reclaimed when it is claimed again (see ``datasets.generation``). Returns the requeued jobs;
    the caller enqueues them (the embedded runner picks queued jobs up by itself).
    """
    host = socket.gethostname()
    cutoff = timezone.now() - stale_after
    candidates = GenerationJob.objects.filter(status=JobStatus.RUNNING)
    requeued = []
    for job in candidates.filter(
        Q(heartbeat__lt=cutoff) | Q(heartbeat__isnull=True) | Q(worker__startswith=f"{host}:")
    ):
        stale = job.heartbeat is None or job.heartbeat < cutoff
        if not stale and not _worker_is_dead(job.worker, host):
            continue
        with transaction.atomic():
            updated = GenerationJob.objects.filter(
                pk=job.pk, status=JobStatus.RUNNING, worker=job.worker
            ).update(status=JobStatus.QUEUED, worker="", updated=timezone.now())
            if updated != 1:
                continue  # it moved on (finished, or another recoverer got there first)
            dead_worker = job.worker
            job.refresh_from_db()
            logger.warning("requeued job %s left running by dead worker %r", job.id, dead_worker or "?")
            send_job_event(job, EVENT_STATUS, status_payload(job))
        requeued.append(job)
    return requeued


def worker_identity() -> str:
    """``host:pid:thread`` of the caller, stored on the job it runs (used to tell dead runners apart)."""
    import threading

    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"[:200]


def _worker_is_dead(worker: str, host: str) -> bool:
    parts = worker.split(":")
    if len(parts) < 2 or parts[0] != host:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        # Our own process: the job is orphaned only if no live thread of ours carries that name.
        import threading

        thread_name = ":".join(parts[2:])
        return not any(thread.name == thread_name for thread in threading.enumerate())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        import psutil

        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except Exception:
        return False


def _enqueue_on_commit(job: GenerationJob) -> None:
    from datasets import runner

    job_id = job.id
    transaction.on_commit(lambda: runner.enqueue(job_id))
