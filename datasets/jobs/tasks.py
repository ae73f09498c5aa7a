"""Celery tasks of the scale-out runner: each processes one chunk of work handed out by the fair scheduler."""

from __future__ import annotations

import logging
import math

from celery import shared_task
from django.db import close_old_connections
from django.utils import timezone

logger = logging.getLogger(__name__)


@shared_task(bind=True, name="samgen.process_chunk", acks_late=True, max_retries=None, ignore_result=True)
def process_chunk(self) -> bool:
    """Claim and process one chunk (any user's: the scheduler is fair, not the task). When nothing is claimable
    but items are still leased to other workers, check back when the first lease expires: that is how the work
    of a worker that died is finished by another one."""
    from datasets.jobs.runners import work_safely
    from datasets.jobs.services import next_lease_expiry

    close_old_connections()
    try:
        if work_safely():
            return True
        expiry = next_lease_expiry()
    finally:
        close_old_connections()
    if expiry is not None:
        countdown = max(1, math.ceil((expiry - timezone.now()).total_seconds()) + 1)
        raise self.retry(countdown=countdown)
    return False
