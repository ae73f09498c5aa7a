"""Runners and recovery: the embedded thread, orphaned jobs, and a runner process killed mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone
from django_eventstream.models import Event

from datasets import runner
from datasets.generation import generate_job
from datasets.models import GenerationJob, ItemStatus, JobStatus
from datasets.services.jobs import STALE_AFTER, job_create, jobs_requeue_orphaned, worker_identity
from imaging.codecs import sha256_hex
from tests.factories import DatasetFactory, png_bytes
from tests.jobs.conftest import add_templates, store_image


def _wait_for(predicate, timeout: float = 30.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out")


@pytest.fixture
def embedded(settings):
    settings.JOB_RUNNER = "embedded"
    instance = runner.EmbeddedRunner(poll_seconds=0.2)
    yield instance
    instance.stop()


@pytest.mark.django_db(transaction=True)
def test_the_embedded_runner_runs_jobs_oldest_first_and_survives_a_crash(
    alice, photo_dataset, embedded, monkeypatch
):
    add_templates(photo_dataset, 1)
    with runner.use_runner("inline"), monkeypatch.context() as held:
        held.setattr("datasets.runner.enqueue", lambda job_id: None)
        first, second, third = (job_create(dataset=photo_dataset, owner=alice) for _ in range(3))
    order = []
    real_generate = generate_job

    def flaky(job_id, **kwargs):
        order.append(job_id)
        if job_id == first.id:
            raise RuntimeError("boom")
        return real_generate(job_id, **kwargs)

    monkeypatch.setattr("datasets.generation.generate_job", flaky)
    embedded.start()
    _wait_for(lambda: not GenerationJob.objects.filter(status__in=["queued", "running"]).exists())

    assert order == [first.id, second.id, third.id]
    statuses = dict(GenerationJob.objects.values_list("pk", "status"))
    assert statuses == {first.id: "failed", second.id: "succeeded", third.id: "succeeded"}
    first.refresh_from_db()
    assert first.error == "RuntimeError: boom" and first.finished_at
    assert embedded.is_alive


@pytest.mark.django_db(transaction=True)
def test_enqueue_wakes_the_embedded_runner_at_once(alice, photo_dataset, embedded):
    embedded.poll_seconds = 60  # only a wake-up can make it this fast
    embedded.start()
    add_templates(photo_dataset, 1)
    with runner.use_runner("embedded"):
        runner._runners["embedded"] = embedded
        try:
            job = job_create(dataset=photo_dataset, owner=alice)
        finally:
            runner._runners.pop("embedded")
    _wait_for(lambda: GenerationJob.objects.get(pk=job.pk).status == "succeeded", timeout=30)


@pytest.mark.django_db
def test_orphans_of_dead_or_silent_workers_are_requeued_and_live_ones_left_alone(
    alice, photo_dataset, run_jobs
):
    from tests.factories import GenerationJobFactory

    host = worker_identity().split(":")[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = GenerationJobFactory(dataset=photo_dataset, status="running", worker=f"{host}:{dead.pid}:x")
    silent = GenerationJobFactory(
        dataset=photo_dataset,
        status="running",
        worker="elsewhere:1:x",
        heartbeat=timezone.now() - STALE_AFTER * 2,
    )
    alive = GenerationJobFactory(
        dataset=photo_dataset,
        status="running",
        worker=f"{host}:{os.getpid()}:MainThread",
        heartbeat=timezone.now(),
    )
    with run_jobs():
        requeued = jobs_requeue_orphaned()
    assert {job.pk for job in requeued} == {orphan.pk, silent.pk}
    assert dict(GenerationJob.objects.values_list("pk", "status")) == {
        orphan.pk: "queued",
        silent.pk: "queued",
        alive.pk: "running",
    }


@pytest.mark.django_db(transaction=True)
def test_a_runner_killed_mid_job_is_resumed_with_every_variant_exactly_once(alice, settings, held_jobs):
    """kill -9 a runner process in the middle of a job, recover, finish: nothing lost, nothing duplicated."""
    dataset = DatasetFactory(owner=alice)
    for index in range(8):
        store_image(dataset, f"img_{index}.png", png_bytes(96, 72, seed=index))
    templates = add_templates(dataset, 2)
    job = job_create(dataset=dataset, owner=alice, compose="each", export_mask=True)
    assert held_jobs == [job.id]

    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "EMBED_CACHE_DIR": str(settings.EMBED_CACHE_DIR),
        "SAM_BACKEND": "classical",
        "JOB_RUNNER": "inline",
        "ITEM_DELAY": "0.4",
    }
    script = Path(__file__).with_name("killable_runner.py")
    process = subprocess.Popen(
        [sys.executable, str(script), job.id.hex], env=env, cwd=django_settings.BASE_DIR
    )
    try:
        _wait_for(lambda: GenerationJob.objects.get(pk=job.pk).succeeded_items >= 3, timeout=60)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.worker.split(":")[1] == str(process.pid)
    done_before = job.succeeded_items
    assert 3 <= done_before < 8
    assert job.variants.count() == 2 * done_before  # committed with their items, never ahead of them
    interrupted = list(job.items.filter(status=ItemStatus.RUNNING).values_list("index", flat=True))

    requeued = jobs_requeue_orphaned()
    assert [j.pk for j in requeued] == [job.pk]
    generate_job(job.id)

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert (job.succeeded_items, job.failed_items, job.variant_count) == (8, 0, 16)
    pairs = Counter(job.variants.values_list("image_id", "template_key"))
    assert len(pairs) == 16 and set(pairs.values()) == {1}
    assert {key for _, key in pairs} == {t.id.hex for t in templates}
    for variant in job.variants.all():
        with variant.file.open("rb") as handle:
            assert sha256_hex(handle.read()) == variant.sha256
    # Deterministic names: a half-written attempt was overwritten, not left behind.
    assert len(default_storage.listdir(f"variants/{job.id.hex}")[1]) == 32
    for index in interrupted:
        assert job.items.get(index=index).attempts == 2
    # One "item" event per image over both runs: the killed run's uncommitted work never went out.
    items = Event.objects.filter(channel=f"job-{job.id.hex}", type="item")
    assert items.count() == 8
