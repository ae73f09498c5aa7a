"""``JOB_RUNNER=celery``: jobs run on Celery workers (Redis broker) on any number of machines.

``enqueue`` sends one ``process_chunk`` task per chunk of the job's claimable items; each task claims whatever
chunk the fair scheduler hands out next, so tasks and jobs are not tied together and one user's big job cannot
monopolise the workers. The web process itself runs no job (its cores stay free for previews).
"""

from __future__ import annotations

import math
import uuid

from django.conf import settings

from datasets.models import ItemStatus, JobItem


class CeleryRunner:
    def enqueue(self, job_id: uuid.UUID) -> None:
        from datasets.jobs.tasks import process_chunk

        pending = JobItem.objects.filter(job_id=job_id, status=ItemStatus.PENDING).count()
        for _ in range(max(1, math.ceil(pending / settings.JOB_CHUNK_SIZE))):
            process_chunk.delay()

    def start(self) -> None:
        """Nothing runs in the web process; workers sweep leftover work when they start."""
