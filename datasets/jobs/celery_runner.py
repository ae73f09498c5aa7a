"""``JOB_RUNNER=celery``: jobs run on Celery workers (Redis broker) on any number of machines.

``enqueue`` sends one ``process_chunk`` task per chunk of the job's claimable items; each task claims whatever
chunk the fair scheduler hands out next, so tasks and jobs are not tied together and one user's big job cannot
monopolise the workers. The web process itself runs no job (its cores stay free for previews).

Follow-ups. The database, not the broker, says what is left: after its chunk each task reads the
``WorkOutlook`` and

- sends one task for each claimable chunk not covered by a task waiting in the queue (items released by a
  worker, leases that expired while nothing was queued), so the number of waiting tasks never exceeds the
  number of chunks left;
- when nothing is claimable but items are leased (other workers run them, or ran them and died), schedules
  one task for the moment the first lease expires, guarded by a Redis key (the broker's Redis: ``SET`` with an
  expiry) so that the workers that go idle together schedule one check, not one each. That task picks up
  what a dead worker left (its message only comes back after ``CELERY_VISIBILITY_TIMEOUT``), or, when the
  leases were renewed, schedules the next check. While no job is active, nothing is sent. (Should the
  worker holding that scheduled task die too, the key expires ``FOLLOW_UP_GRACE_SECONDS`` after its time and
  the next task to end, or any worker's start-up sweep, schedules the check again.)
"""

from __future__ import annotations

import logging
import math
import uuid

from django.conf import settings
from django.utils import timezone

from datasets.models import ItemStatus, JobItem

logger = logging.getLogger(__name__)

#: The Redis key that says a lease-expiry check is scheduled, and for when (epoch seconds).
FOLLOW_UP_KEY = "samgen:lease-check"
#: How long past its time a scheduled check still counts as pending (a worker busy with a chunk runs it late).
FOLLOW_UP_GRACE_SECONDS = 120


class CeleryRunner:
    def enqueue(self, job_id: uuid.UUID) -> None:
        from datasets.jobs.tasks import process_chunk

        pending = JobItem.objects.filter(job_id=job_id, status=ItemStatus.PENDING).count()
        for _ in range(max(1, math.ceil(pending / settings.JOB_CHUNK_SIZE))):
            process_chunk.delay()

    def start(self) -> None:
        """Nothing runs in the web process; workers sweep leftover work when they start."""


def _app():
    from samsite.celery import app

    return app


def queued_tasks() -> int:
    """How many tasks wait in the default queue (not counting those a worker has already taken)."""
    app = _app()
    try:
        with app.pool.acquire(block=True) as conn:
            return conn.default_channel.queue_declare(
                queue=app.conf.task_default_queue, passive=True
            ).message_count
    except Exception:  # an empty Redis queue does not exist: passive declare fails
        return 0


def _redis():
    import redis

    url = _app().conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    return redis.Redis.from_url(url)


def follow_up_started() -> None:
    """The scheduled lease-expiry check runs: the next one may be scheduled (by this task or any other)."""
    client = _redis()
    if client is not None:
        try:
            client.delete(FOLLOW_UP_KEY)
        except Exception:
            logger.warning("could not clear %s", FOLLOW_UP_KEY, exc_info=True)


def follow_ups_send(outlook) -> int:
    """Send the tasks ``outlook`` (a ``services.WorkOutlook``) needs; returns how many were sent."""
    from datasets.jobs.tasks import process_chunk

    if outlook.claimable_chunks:
        missing = outlook.claimable_chunks - queued_tasks()
        for _ in range(max(0, missing)):
            process_chunk.delay()
        return max(0, missing)
    if outlook.next_lease_expiry is None:
        return 0
    countdown = max(1, math.ceil((outlook.next_lease_expiry - timezone.now()).total_seconds()) + 1)
    due = timezone.now().timestamp() + countdown
    client = _redis()
    if client is not None:
        try:
            expiry = countdown + FOLLOW_UP_GRACE_SECONDS
            if not client.set(FOLLOW_UP_KEY, str(due), ex=expiry, nx=True):
                scheduled = client.get(FOLLOW_UP_KEY)
                if scheduled is not None and float(scheduled) <= due + 1:
                    return 0  # a check at (or before) that time is already scheduled
                client.set(FOLLOW_UP_KEY, str(due), ex=expiry)  # an earlier one is needed
        except Exception:
            logger.warning("could not read %s; scheduling a check anyway", FOLLOW_UP_KEY, exc_info=True)
    process_chunk.apply_async(kwargs={"follow_up": True}, countdown=countdown)
    return 1
