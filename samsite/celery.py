"""The Celery app of the scale-out runner (``JOB_RUNNER=celery``): ``celery -A samsite worker``.

Workers take chunk tasks from Redis (``CELERY_BROKER_URL``); the tasks claim work through the same services as
every runner (``datasets.jobs``), so PostgreSQL stays the truth and a lost task loses nothing. Each worker
process loads its own model once, right after the fork (never in the parent, never at import), with
``WORKER_TORCH_THREADS`` intra-op threads so several processes on one machine share its cores.
"""

from __future__ import annotations

import contextlib
import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "samsite.settings")

app = Celery("samsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["datasets.jobs"])


def _prepare_process() -> None:
    import torch
    from django.conf import settings

    from imaging.registry import reset_segmenters

    torch.set_num_threads(settings.WORKER_TORCH_THREADS)
    reset_segmenters()
    if settings.SAM_BACKEND != "classical":
        from datasets.segmentation import app_segmenter

        # Load the model now, so the first chunk does not pay for it; a failure is reported by the chunk on its
        # job, and the worker stays up.
        with contextlib.suppress(Exception):
            app_segmenter()


@worker_process_init.connect
def _on_worker_process_init(**kwargs) -> None:
    _prepare_process()


@worker_ready.connect
def _on_worker_ready(sender=None, **kwargs) -> None:
    # Work whose tasks were lost (a broker restart, a worker killed before it acknowledged) is still in the
    # database: one sweep task per worker start picks it up.
    from celery.concurrency.solo import TaskPool as SoloPool

    from datasets.jobs.tasks import process_chunk

    controller = getattr(sender, "controller", None)
    if isinstance(getattr(controller, "pool", None), SoloPool):
        _prepare_process()  # --pool=solo: no child process, no worker_process_init
    process_chunk.delay()
