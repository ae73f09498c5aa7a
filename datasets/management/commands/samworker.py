"""``manage.py samworker``: a job worker process without a broker (PostgreSQL is the queue).

It claims chunks from the fair scheduler exactly as the embedded thread and Celery tasks do, so any number of
them, on any machines sharing the database and media, process jobs together. Stop it with SIGTERM or Ctrl-C:
it finishes its current image, releases the rest of its chunk and exits.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Process queued generation jobs (chunks from the fair scheduler) until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Exit as soon as no work is left.")
        parser.add_argument(
            "--poll", type=float, default=2.0, help="Seconds between looks at an empty queue."
        )
        parser.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads.")

    def handle(self, *args, once: bool, poll: float, torch_threads: int | None, **options):
        import torch
        from django.conf import settings
        from django.db import close_old_connections

        from datasets.jobs.runners import work_safely
        from datasets.jobs.services import leases_release_orphaned

        torch.set_num_threads(torch_threads or settings.WORKER_TORCH_THREADS)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        processed = 0
        while not stop.is_set():
            close_old_connections()
            leases_release_orphaned()
            if work_safely():
                processed += 1
                continue
            if once:
                break
            stop.wait(poll)
        self.stdout.write(f"samworker: {processed} chunks processed")
