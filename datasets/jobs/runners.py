"""The job runner seam: who runs the work of queued jobs, chosen by ``settings.JOB_RUNNER``.

PostgreSQL is the queue and the truth (job and item rows, claimed in chunks with leases by
``datasets.jobs.services``); a runner only decides *where* chunks are processed. Every runner implements
``JobRunner``:

- ``inline``: runs the whole job synchronously inside ``enqueue`` (tests, the ``generate`` command).
- ``embedded`` (default): one daemon worker thread in the web process, sharing the process's model with the
  interactive endpoints. It claims chunks from the fair scheduler (round-robin across users), so several web
  processes, each with its thread, share the work safely. A chunk that raises marks its job failed and the
  thread carries on. It releases the leases of dead local workers as it goes.
- ``celery``: Celery workers on any number of machines (``datasets.jobs.celery_runner``); the web process runs
  no job at all.

Callers use ``enqueue(job_id)`` (after commit: ``datasets.jobs.services`` does it) and, in the web server,
``start_server_runner()`` once at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connection
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

RUNNERS = {
    "inline": "datasets.jobs.runners.InlineRunner",
    "embedded": "datasets.jobs.runners.EmbeddedRunner",
    "celery": "datasets.jobs.celery_runner.CeleryRunner",
}


class JobRunner(Protocol):
    def enqueue(self, job_id: uuid.UUID) -> None:
        """Make sure the committed, queued job ``job_id`` runs (now, soon, or somewhere else)."""

    def start(self) -> None:
        """Called once when a server process starts serving: resume orphaned and queued jobs."""


class InlineRunner:
    """Runs the job to its end before ``enqueue`` returns. Exceptions are recorded on the job, not raised."""

    def enqueue(self, job_id: uuid.UUID) -> None:
        run_job_safely(job_id)

    def start(self) -> None:
        from datasets.jobs.services import leases_release_orphaned

        for job_id in leases_release_orphaned():
            self.enqueue(job_id)


class EmbeddedRunner:
    """One daemon thread in this process that processes chunks handed out by the fair scheduler.

    ``enqueue`` only wakes the thread (the item rows are the queue), so the first event of a submitted job
    reaches its client in milliseconds. The thread also polls, so work queued by another process (a retry from
    a management shell, items whose lease expired) is picked up within ``poll_seconds``.
    """

    thread_name = "samgen-job-runner"

    def __init__(self, *, poll_seconds: float = 5.0) -> None:
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.is_alive:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()

    def enqueue(self, job_id: uuid.UUID) -> None:
        self.start()
        self._wake.set()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the current chunk (tests, shutdown). Unclaimed work stays queued for the next start."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        from datasets.jobs.services import leases_release_orphaned

        try:
            while not self._stop.is_set():
                close_old_connections()
                try:
                    leases_release_orphaned()
                    worked = work_safely()
                except Exception:
                    logger.exception("job runner could not read the queue")
                    worked = False
                if not worked:
                    self._wake.wait(self.poll_seconds)
                    self._wake.clear()
        finally:
            connection.close()


def work_safely(*, worker: str | None = None) -> bool:
    """Process one chunk from the fair scheduler; a chunk that raises marks its job failed. False when idle."""
    from datasets.jobs.processing import process_claim
    from datasets.jobs.services import items_claim, job_fail, worker_identity

    claim = items_claim(worker=worker or worker_identity())
    if claim is None:
        return False
    try:
        process_claim(claim)
    except Exception as exc:
        logger.exception("job %s failed", claim.job.id)
        try:
            job_fail(job_id=claim.job.id, error=f"{type(exc).__name__}: {exc}")
        except Exception:
            logger.exception("could not mark job %s failed", claim.job.id)
    return True


def run_job_safely(job_id: uuid.UUID) -> None:
    """Run one job to its end in this thread; anything it raises marks the job failed instead of killing the
    caller."""
    from datasets.jobs import processing
    from datasets.jobs.services import job_fail

    try:
        processing.generate_job(job_id)
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        try:
            job_fail(job_id=job_id, error=f"{type(exc).__name__}: {exc}")
        except Exception:
            logger.exception("could not mark job %s failed", job_id)


_runners: dict[str, JobRunner] = {}
_runners_lock = threading.Lock()
_override = threading.local()


def get_runner(name: str | None = None) -> JobRunner:
    """The process-wide runner for ``name`` (default: the thread's override, else ``settings.JOB_RUNNER``)."""
    name = name or getattr(_override, "name", None) or settings.JOB_RUNNER
    with _runners_lock:
        runner = _runners.get(name)
        if runner is None:
            try:
                runner_class = import_string(RUNNERS[name])
            except (KeyError, ImportError) as exc:
                raise ImproperlyConfigured(f"JOB_RUNNER={name!r} is not available: {exc}") from exc
            runner = _runners[name] = runner_class()
        return runner


@contextlib.contextmanager
def use_runner(name: str) -> Iterator[JobRunner]:
    """Run the jobs enqueued by this thread inside the block with ``name`` (e.g. the CLI forces inline)."""
    previous = getattr(_override, "name", None)
    _override.name = name
    try:
        yield get_runner(name)
    finally:
        _override.name = previous


def enqueue(job_id: uuid.UUID) -> None:
    """Hand a committed, queued job to the configured runner."""
    get_runner().enqueue(job_id)


def start_server_runner() -> None:
    """Start the embedded runner of a web process (resumes orphaned and queued jobs); other runners no-op.

    Called from ``samsite/asgi.py`` when the ASGI app is loaded; never under tests, which choose their runner.
    """
    if settings.JOB_RUNNER == "embedded" and not settings.TESTING:
        get_runner("embedded").start()
