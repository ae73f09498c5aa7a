"""Celery tasks of the scale-out runner: each processes one chunk of work handed out by the fair scheduler.

Tasks keep themselves going: after its chunk every task looks at what is left (``work_outlook``) and sends the
follow-ups it needs (``celery_runner.follow_ups_send``), so ``celery -A samsite worker`` alone finishes every
job, including the items of a worker that died (SIGKILL, machine lost) as soon as their lease expires, without
waiting for the broker to give its unacknowledged message back (``CELERY_VISIBILITY_TIMEOUT``).
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import close_old_connections

logger = logging.getLogger(__name__)


@shared_task(name="samgen.process_chunk", acks_late=True, ignore_result=True)
def process_chunk(follow_up: bool = False) -> bool:
    """Claim and process one chunk (any user's: the scheduler is fair, not the task), then send the follow-up
    tasks the remaining work needs. ``follow_up`` marks the one task scheduled for the first lease expiry."""
    from datasets.jobs.celery_runner import follow_up_started, follow_ups_send
    from datasets.jobs.runners import work_safely
    from datasets.jobs.services import leases_release_orphaned, work_outlook

    if follow_up:
        follow_up_started()
    close_old_connections()
    try:
        leases_release_orphaned()
        worked = work_safely()
        outlook = work_outlook()
    finally:
        close_old_connections()
    follow_ups_send(outlook)
    return worked
