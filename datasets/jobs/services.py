"""The job state machine: every transition of a job and of its items, and nothing else.

Jobs: create, cancel, retry, delete, fail, complete. Items: claim (a chunk, by compare-and-set, with a lease),
heartbeat, release, finish. Every runner (inline, the embedded thread, Celery workers on any machine) and the
processing loop (``datasets.jobs.processing``) go through these functions; they follow the transitions documented
on ``GenerationJob`` and ``JobItem``, write events in the same transaction as the change (``send_job_event``) and
hand work to the runner after commit, so a runner never sees an uncommitted job.

Distribution. A job's items are claimed in chunks of ``JOB_CHUNK_SIZE`` by any number of workers at once. A claim
is a compare-and-set on the item rows (``pending``, or ``running`` with an expired lease) that writes the worker's
identity and a lease (``JOB_LEASE_SECONDS``), renewed after every image. A worker that dies loses only its lease:
its items become claimable again when the lease expires (at once when the dead process was on this host) and
another worker finishes them. Every write a worker makes to an item is fenced on its identity, so a worker that
lost its lease can never commit a duplicate: each variant exists exactly once and the counters stay exact. The
worker identity carries a per-process boot nonce, so a restarted process that reuses a dead one's PID (PID 1 in a
container) is never taken for it.

Fairness. Chunks are handed out round-robin across users with claimable work (the user served longest ago first,
``SchedulerTurn``), then oldest job first within a user: one user's 500-image job holds back another user's
5-image job by at most one chunk per worker.

Completion. A job finishes when its last item does, whichever worker ran it: the finishing transaction locks the
job row and moves it to ``succeeded`` (or ``canceled`` when a cancel was requested and no item is still running),
so the ``done`` event is sent exactly once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery
from django.utils import timezone

from datasets.jobs.events import (
    EVENT_DONE,
    EVENT_ITEM,
    EVENT_STATUS,
    done_payload,
    item_payload,
    job_events_delete,
    send_job_event,
    status_payload,
)
from datasets.jobs.snapshots import template_snapshot
from datasets.models import (
    ComposeMode,
    Dataset,
    GenerationJob,
    ItemStatus,
    JobItem,
    JobSource,
    JobStatus,
    OutputFormat,
    SchedulerTurn,
    Variant,
)
from datasets.services.datasets import dataset_labels_register
from datasets.services.files import files_delete_on_commit, rows_delete_with_files, variant_stored_names
from imaging.errors import EditValidationError, PointValidationError
from samsite.common.errors import ServiceError

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
_ITEM_COUNTERS = {
    ItemStatus.SUCCEEDED: "succeeded_items",
    ItemStatus.FAILED: "failed_items",
    ItemStatus.SKIPPED: "skipped_items",
}


# --- Worker identity -------------------------------------------------------------------------------------

_boot_nonce = secrets.token_hex(4)


def _new_boot_nonce() -> None:
    global _boot_nonce
    _boot_nonce = secrets.token_hex(4)


os.register_at_fork(after_in_child=_new_boot_nonce)


def worker_identity() -> str:
    """``host:pid:nonce:thread`` of the caller: the identity its leases carry.

    The nonce is drawn once per process (and again after ``fork``), so two processes that share a PID over time
    (a restarted container's PID 1) never share an identity.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{_boot_nonce}:{threading.current_thread().name}"[:200]


def _lease_seconds() -> int:
    return int(settings.JOB_LEASE_SECONDS)


# --- Jobs ------------------------------------------------------------------------------------------------


def job_create(
    *,
    dataset: Dataset,
    owner: AbstractBaseUser,
    templates: Sequence[tuple[object, Mapping | None]] | None = None,
    compose: str = ComposeMode.STACK,
    output_format: str = OutputFormat.PNG,
    export_mask: bool = False,
    source: str = JobSource.API,
    strict_edits: bool = True,
) -> GenerationJob:
    """Create a queued job over every image of ``dataset`` and hand it to the runner after commit.

    ``templates`` lists ``(template, edits)`` pairs of the dataset's templates; ``edits`` None means the
    template's default edits. None (the argument) means all the dataset's templates with their default edits.
    Whatever the order given, templates are applied in their save order (``Template.position``), as stacking
    requires. The job keeps a snapshot of templates, prompts and edits, so later template changes do not alter
    it. One JobItem per image, in upload order. ``strict_edits`` False ignores unknown edit keys (seed API).

    Raises ServiceError: ``invalid_compose``, ``invalid_format``, ``invalid_source``, ``no_templates``,
    ``invalid_template`` (another dataset's template; ``index``), ``duplicate_template`` (``index``),
    ``invalid_edits`` (``field``, ``template_id``), ``invalid_points`` (``template_id``), and 429
    ``too_many_jobs`` / ``too_many_queued_items`` beyond the owner's limits (``limit``).
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

    chosen = (
        [(t, None) for t in dataset.templates.order_by("position")] if templates is None else list(templates)
    )
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
        # Templates written outside the template services (admin, scripts) still get their labels numbered.
        dataset_labels_register(dataset=dataset, labels=[t.get("label") or t["name"] for t in snapshots])
        image_ids = list(dataset.images.order_by("position").values_list("pk", flat=True))
        _check_owner_limits(owner, new_items=len(image_ids))
        job = GenerationJob.objects.create(
            dataset=dataset,
            owner=owner,
            compose=compose,
            output_format=output_format,
            export_mask=export_mask,
            source=source,
            templates_snapshot=snapshots,
            total_items=len(image_ids),
        )
        JobItem.objects.bulk_create(
            [JobItem(job=job, image_id=image_id, index=index) for index, image_id in enumerate(image_ids)],
            batch_size=500,
        )
        send_job_event(job, EVENT_STATUS, status_payload(job, queue_position=job_queue_position(job)))
        if not image_ids:
            _complete_locked(job)
        else:
            _enqueue_on_commit(job)
    return job


def _check_owner_limits(owner: AbstractBaseUser, *, new_items: int, exclude_job=None) -> None:
    """429 when ``owner`` already has ``MAX_ACTIVE_JOBS_PER_USER`` jobs queued or running, or the new work would
    take their unfinished items past ``MAX_QUEUED_ITEMS_PER_USER``. Locks the owner's user row first, so
    concurrent creations by one user (in any process) are counted one after the other."""
    get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
    active = GenerationJob.objects.filter(owner=owner, status__in=ACTIVE)
    if exclude_job is not None:
        active = active.exclude(pk=exclude_job.pk)
    limit = settings.MAX_ACTIVE_JOBS_PER_USER
    if active.count() >= limit:
        raise ServiceError(
            "too_many_jobs",
            f"you already have {limit} jobs queued or running; wait for one to finish or cancel one",
            status=429,
            limit=limit,
        )
    item_limit = settings.MAX_QUEUED_ITEMS_PER_USER
    unfinished = JobItem.objects.filter(job__in=active, status__in=[ItemStatus.PENDING, ItemStatus.RUNNING])
    if unfinished.count() + new_items > item_limit:
        raise ServiceError(
            "too_many_queued_items",
            f"at most {item_limit} images may be waiting in your queued jobs at once",
            status=429,
            limit=item_limit,
        )


def job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Cancel a job. A queued one ends at once (queued -> canceled). A running one stops within one image on
    every worker: they see ``cancel_requested``, release the items they have not started, and the last of them
    to finish its current image moves the job running -> canceled (variants made so far are kept). Items whose
    lease expired (their worker died, on any host) are not waited for: they go back to pending at once, or
    when their lease expires (``jobs_end_expired_cancels``, run by every worker loop).

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
            _complete_locked(locked)
        else:
            raise ServiceError("job_not_cancelable", f"the job already {locked.status}", status=409)
    return locked


def job_retry_failed(*, job: GenerationJob) -> GenerationJob:
    """Queue an ended job again: its failed items go back to pending (failed -> pending), and the workers
    process every item not yet done, so a canceled job also resumes where it stopped. Variants already made
    are kept; counters are adjusted in the same transaction.

    Raises ServiceError ``job_not_finished`` (409) while it is queued or running, ``nothing_to_retry`` (409)
    when every item already succeeded or was skipped, and the owner limits of ``job_create`` (429).
    """
    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if not locked.is_terminal:
            raise ServiceError("job_not_finished", f"the job is still {locked.status}", status=409)
        remaining = locked.items.exclude(status__in=[ItemStatus.SUCCEEDED, ItemStatus.SKIPPED]).count()
        if remaining == 0:
            raise ServiceError("nothing_to_retry", "no failed or unfinished items", status=409)
        _check_owner_limits(locked.owner, new_items=remaining, exclude_job=locked)
        retried = locked.items.filter(status=ItemStatus.FAILED).update(status=ItemStatus.PENDING, error="")
        locked.failed_items = max(0, locked.failed_items - retried)
        locked.status = JobStatus.QUEUED
        locked.error = ""
        locked.cancel_requested = False
        locked.finished_at = None
        locked.save(
            update_fields=["failed_items", "status", "error", "cancel_requested", "finished_at", "updated"]
        )
        send_job_event(
            locked, EVENT_STATUS, status_payload(locked, queue_position=job_queue_position(locked))
        )
        _enqueue_on_commit(locked)
    return locked


def job_delete(*, job: GenerationJob) -> None:
    """Delete an ended job with its items, variants and stored events; its files go after commit.

    Raises ServiceError ``job_not_finished`` (409) while it is queued or running (cancel it first).
    """
    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if not locked.is_terminal:
            raise ServiceError("job_not_finished", f"the job is still {locked.status}", status=409)
        job_id = locked.pk
        rows_delete_with_files(locked, variant_stored_names(Variant.objects.filter(job=locked)))
        job_events_delete([job_id])


def job_fail(*, job_id, error: str) -> None:
    """queued | running -> failed with ``error`` (the run itself cannot go on, e.g. no segmenter): items being
    run go back to pending, so a retry resumes them."""
    with transaction.atomic():
        updated = GenerationJob.objects.filter(pk=job_id, status__in=ACTIVE).update(
            status=JobStatus.FAILED, error=error[:MAX_ERROR_CHARS], finished_at=timezone.now()
        )
        if updated != 1:
            return
        JobItem.objects.filter(job_id=job_id, status=ItemStatus.RUNNING).update(
            status=ItemStatus.PENDING, worker="", lease_expires_at=None
        )
        job = GenerationJob.objects.get(pk=job_id)
        send_job_event(job, EVENT_STATUS, status_payload(job))
        send_job_event(job, EVENT_DONE, done_payload(job))


def job_record_segmenter(*, job: GenerationJob, label: str) -> None:
    """Name the segmenter that runs the job (the first worker to start on it records its own)."""
    if GenerationJob.objects.filter(pk=job.pk, segmenter="").update(segmenter=label[:200]):
        job.segmenter = label[:200]


def job_add_timings(*, job: GenerationJob, timings: Mapping[str, float]) -> None:
    """Add per-stage milliseconds of one worker's chunk to the job's totals (read-modify-write under the job
    row's lock, so several workers' figures add up)."""
    if not timings:
        return
    with transaction.atomic():
        row = GenerationJob.objects.select_for_update().filter(pk=job.pk).values_list("timings_ms", flat=True)
        current = row.first()
        if current is None:
            return
        merged = {key: float(value) for key, value in (current or {}).items()}
        for key, value in timings.items():
            merged[key] = round(merged.get(key, 0.0) + float(value), 1)
        GenerationJob.objects.filter(pk=job.pk).update(timings_ms=merged)


def job_queue_position(job: GenerationJob) -> int | None:
    """While ``job`` waits (queued), how many turns of the round-robin come before its first chunk: 1 + the
    owner's older active jobs + the other users with work waiting. None once it runs or ended."""
    if job.status != JobStatus.QUEUED:
        return None
    active = GenerationJob.objects.filter(status__in=ACTIVE, cancel_requested=False).exclude(pk=job.pk)
    older_own = active.filter(owner_id=job.owner_id, created__lt=job.created).count()
    other_users = active.exclude(owner_id=job.owner_id).values("owner_id").distinct().count()
    return 1 + older_own + other_users


# --- Items: claims, leases, results ----------------------------------------------------------------------


@dataclass
class Claim:
    """A chunk of one job's items leased to ``worker`` (in index order)."""

    job: GenerationJob
    worker: str
    items: list[JobItem] = field(default_factory=list)

    @property
    def item_ids(self) -> list:
        return [item.pk for item in self.items]


def _claimable(now) -> Q:
    return Q(status=ItemStatus.PENDING) | Q(status=ItemStatus.RUNNING, lease_expires_at__lt=now)


def items_claim(*, worker: str, job_id=None, size: int | None = None) -> Claim | None:
    """Lease the next chunk of work to ``worker``, or None when there is none.

    The job is chosen round-robin across users (the one served longest ago first), then oldest job first;
    ``job_id`` restricts the choice to that job (the inline runner, the CLI). Claimable items are pending ones
    and running ones whose lease expired (their worker died). A queued job becomes running with its first claim.
    """
    size = size or settings.JOB_CHUNK_SIZE
    now = timezone.now()
    claimable = _claimable(now)
    jobs = GenerationJob.objects.filter(status__in=ACTIVE, cancel_requested=False).filter(
        Exists(JobItem.objects.filter(claimable, job=OuterRef("pk")))
    )
    if job_id is not None:
        jobs = jobs.filter(pk=job_id)
    if settings.JOB_SCHEDULING == "fifo":  # the baseline the fairness benchmark measures against
        jobs = jobs.order_by("created")
    else:
        turn = SchedulerTurn.objects.filter(owner=OuterRef("owner")).values("last_claimed_at")[:1]
        jobs = jobs.annotate(turn=Subquery(turn)).order_by(F("turn").asc(nulls_first=True), "created")
    for job in jobs[:8]:
        claim = _claim_from(job, worker=worker, size=size, now=now)
        if claim is not None:
            return claim
    return None


def _claim_from(job: GenerationJob, *, worker: str, size: int, now) -> Claim | None:
    claimable = _claimable(now)
    with transaction.atomic():
        if job.status == JobStatus.QUEUED:
            started = GenerationJob.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
                status=JobStatus.RUNNING, started_at=now, finished_at=None, worker=worker, updated=now
            )
        else:
            started = 0
        candidates = list(
            JobItem.objects.select_for_update(skip_locked=True)
            .filter(claimable, job=job)
            .order_by("index")
            .values_list("pk", flat=True)[:size]
        )
        if not candidates:
            return None
        JobItem.objects.filter(claimable, pk__in=candidates).update(
            status=ItemStatus.RUNNING,
            worker=worker,
            lease_expires_at=now + timedelta(seconds=_lease_seconds()),
            attempts=F("attempts") + 1,
            error="",
            updated=now,
        )
        items = list(
            JobItem.objects.filter(pk__in=candidates, status=ItemStatus.RUNNING, worker=worker)
            .select_related("image", "image__dataset")
            .order_by("index")
        )
        if not items:
            return None
        SchedulerTurn.objects.update_or_create(owner_id=job.owner_id, defaults={"last_claimed_at": now})
        job.refresh_from_db()
        if started:
            send_job_event(job, EVENT_STATUS, status_payload(job))
        return Claim(job=job, worker=worker, items=items)


def items_heartbeat(*, worker: str, item_ids: Iterable) -> set:
    """Renew ``worker``'s lease on these items; returns the ids it still holds (an expired and reclaimed one
    is gone: the caller must not work on it)."""
    ids = list(item_ids)
    if not ids:
        return set()
    now = timezone.now()
    JobItem.objects.filter(pk__in=ids, worker=worker, status=ItemStatus.RUNNING).update(
        lease_expires_at=now + timedelta(seconds=_lease_seconds())
    )
    return set(
        JobItem.objects.filter(pk__in=ids, worker=worker, status=ItemStatus.RUNNING).values_list(
            "pk", flat=True
        )
    )


def items_release(*, worker: str, job: GenerationJob, item_ids: Iterable) -> int:
    """Give back items ``worker`` claimed but did not start (cancel, shutdown): running -> pending, the claim's
    attempt undone. Ends the job when that was all that kept it running (a cancel). Returns how many."""
    ids = list(item_ids)
    if not ids:
        return 0
    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().filter(pk=job.pk).first()
        released = JobItem.objects.filter(pk__in=ids, worker=worker, status=ItemStatus.RUNNING).update(
            status=ItemStatus.PENDING, worker="", lease_expires_at=None, attempts=F("attempts") - 1
        )
        if locked is not None:
            _complete_locked(locked)
    return released


@dataclass
class ItemResult:
    """What processing one image produced, ready to be committed by ``item_finish``."""

    status: str
    variants: list[Variant] = field(default_factory=list)
    error: str = ""
    ms: int | None = None
    cache_hit: bool = False
    encoded: bool = False


def item_finish(
    *, worker: str, job: GenerationJob, item: JobItem, result: ItemResult
) -> GenerationJob | None:
    """Commit one image: its variants (replacing an earlier attempt's), the item's end state, the job's counters
    and its ``item`` event, in one transaction fenced on ``worker``'s lease; and the job's end when it was the
    last item. Returns the job as committed, or None, writing nothing, when the lease was lost (the caller
    discards its files).
    """
    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().filter(pk=job.pk).first()
        if locked is None:
            return None  # the job was deleted
        fenced = JobItem.objects.filter(pk=item.pk, status=ItemStatus.RUNNING, worker=worker)
        if not fenced.select_for_update().exists():
            if not JobItem.objects.filter(pk=item.pk).exists():
                # The image was deleted while it ran (its item went with it): the job has one image fewer.
                GenerationJob.objects.filter(pk=job.pk).update(total_items=F("total_items") - 1)
                _complete_locked(locked)
            return None
        previous = Variant.objects.filter(job=locked, image_id=item.image_id)
        replaced = variant_stored_names(previous)
        replaced_count = previous.count()
        previous.delete()
        Variant.objects.bulk_create(result.variants)
        fenced.update(
            status=result.status,
            error=result.error[:MAX_ERROR_CHARS],
            ms=result.ms,
            cache_hit=result.cache_hit,
            lease_expires_at=None,  # ``worker`` stays: who ran it
            updated=timezone.now(),
        )
        counter = _ITEM_COUNTERS[result.status]
        GenerationJob.objects.filter(pk=job.pk).update(
            **{counter: F(counter) + 1},
            variant_count=F("variant_count") + len(result.variants) - replaced_count,
            encoder_calls=F("encoder_calls") + int(result.encoded),
            cache_hits=F("cache_hits") + int(result.cache_hit),
            heartbeat=timezone.now(),
            updated=timezone.now(),
        )
        locked.refresh_from_db()
        item.status, item.error, item.ms, item.cache_hit = (
            result.status,
            result.error,
            result.ms,
            result.cache_hit,
        )
        send_job_event(locked, EVENT_ITEM, item_payload(locked, item, result.variants))
        kept = set(variant_stored_names(result.variants))
        files_delete_on_commit(name for name in replaced if name not in kept)
        _complete_locked(locked)
    return locked


def _complete_locked(job: GenerationJob) -> bool:
    """Inside a transaction holding ``job``'s row lock: end the job when nothing is left to do (running ->
    succeeded), or when a cancel was requested and no item is still being run (-> canceled); send ``status``
    and ``done`` once. Returns whether it ended the job."""
    if job.status not in ACTIVE:
        return False
    items = JobItem.objects.filter(job=job)
    now = timezone.now()
    if job.cancel_requested:
        # An item whose lease expired is not being run by anyone (its worker died, on any host, or under
        # Celery): it goes back to pending, as the items a worker releases on a cancel do, so a retry resumes it.
        expired = items.filter(status=ItemStatus.RUNNING, lease_expires_at__lt=now).update(
            status=ItemStatus.PENDING, worker="", lease_expires_at=None, updated=now
        )
        if expired:
            logger.warning("released %d items of canceled job %s whose leases expired", expired, job.pk)
        if items.filter(status=ItemStatus.RUNNING).exists():
            return False
        status = JobStatus.CANCELED
    else:
        if items.exclude(status__in=JobItem.DONE).exists():
            return False
        status = JobStatus.SUCCEEDED
    GenerationJob.objects.filter(pk=job.pk).update(
        status=status, finished_at=now, heartbeat=now, started_at=job.started_at or now, updated=now
    )
    job.refresh_from_db()
    send_job_event(job, EVENT_STATUS, status_payload(job))
    send_job_event(job, EVENT_DONE, done_payload(job))
    return True


def leases_release_orphaned(*, host: str | None = None) -> list:
    """Release at once the items leased by workers of this host that are gone (their process died, or it is a
    new process with the same PID), instead of waiting for their leases to expire; and end the canceled jobs
    that only expired leases (of workers on any host) keep running. Returns the affected jobs' ids. Workers
    elsewhere are otherwise recovered by lease expiry alone (their items become claimable)."""
    ended = jobs_end_expired_cancels()
    host = host or socket.gethostname()
    running = JobItem.objects.filter(status=ItemStatus.RUNNING, worker__startswith=f"{host}:")
    dead = {
        worker
        for worker in running.order_by().values_list("worker", flat=True).distinct()
        if _worker_is_dead(worker)
    }
    if not dead:
        return ended
    job_ids = list(running.filter(worker__in=dead).order_by().values_list("job_id", flat=True).distinct())
    for job_id in job_ids:
        with transaction.atomic():
            locked = GenerationJob.objects.select_for_update().filter(pk=job_id).first()
            count = JobItem.objects.filter(job_id=job_id, status=ItemStatus.RUNNING, worker__in=dead).update(
                status=ItemStatus.PENDING, worker="", lease_expires_at=None
            )
            if count:
                logger.warning("released %d items of job %s left by dead workers", count, job_id)
            if locked is not None:
                _complete_locked(locked)
    return ended + [job_id for job_id in job_ids if job_id not in ended]


def jobs_end_expired_cancels() -> list:
    """End the jobs whose cancel was requested and whose items still marked running all have expired leases
    (their workers died after the cancel, on any host): those items go back to pending and the job ends
    running -> canceled, ``done`` sent once (``_complete_locked``). Returns the ended jobs' ids."""
    now = timezone.now()
    candidates = (
        GenerationJob.objects.filter(status__in=ACTIVE, cancel_requested=True)
        .filter(
            Exists(
                JobItem.objects.filter(
                    job=OuterRef("pk"), status=ItemStatus.RUNNING, lease_expires_at__lt=now
                )
            )
        )
        .values_list("pk", flat=True)
    )
    ended = []
    for job_id in list(candidates):
        with transaction.atomic():
            locked = GenerationJob.objects.select_for_update().filter(pk=job_id).first()
            if locked is not None and _complete_locked(locked):
                ended.append(job_id)
    return ended


def _worker_is_dead(worker: str) -> bool:
    """Whether ``worker`` (an identity of this host) no longer runs: its process is gone, a new process holds
    its PID (another boot nonce), or, in this very process, no live thread carries its name."""
    parts = worker.split(":")
    if len(parts) < 4:
        return True  # an identity from before boot nonces: its process is long gone
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    nonce, thread_name = parts[2], ":".join(parts[3:])
    if pid == os.getpid():
        if nonce != _boot_nonce:
            return True
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
    from datasets.jobs import runners

    job_id = job.id
    transaction.on_commit(lambda: runners.enqueue(job_id))


@dataclass(frozen=True)
class WorkOutlook:
    """What is left for the workers: how many chunks could be claimed now, and when the first lease held on an
    active job's items expires (the earliest moment more may become claimable; None when none is held)."""

    claimable_chunks: int
    next_lease_expiry: object = None

    @property
    def idle(self) -> bool:
        return self.claimable_chunks == 0 and self.next_lease_expiry is None


def work_outlook(*, size: int | None = None) -> WorkOutlook:
    """The ``WorkOutlook`` of all active jobs (chunks of ``size``, default ``JOB_CHUNK_SIZE``)."""
    size = size or settings.JOB_CHUNK_SIZE
    per_job = (
        JobItem.objects.filter(
            _claimable(timezone.now()), job__status__in=ACTIVE, job__cancel_requested=False
        )
        .order_by()
        .values("job_id")
        .annotate(count=Count("pk"))
        .values_list("count", flat=True)
    )
    return WorkOutlook(
        claimable_chunks=sum(-(-count // size) for count in per_job), next_lease_expiry=next_lease_expiry()
    )


def next_lease_expiry():
    """When the first lease held on an active job's items expires (None when no item is being run)."""
    return (
        JobItem.objects.filter(status=ItemStatus.RUNNING, job__status__in=ACTIVE)
        .order_by("lease_expires_at")
        .values_list("lease_expires_at", flat=True)
        .first()
    )
