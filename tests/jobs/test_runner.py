"""Runners and recovery: the embedded thread, orphaned jobs, and a runner process killed mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone
from django_eventstream.models import Event

from datasets.jobs import runners as runner
from datasets.jobs.processing import generate_job
from datasets.jobs.services import job_create, leases_release_orphaned, worker_identity
from datasets.models import GenerationJob, ItemStatus, JobItem, JobStatus
from imaging.codecs import sha256_hex
from tests.fixtures.factories import DatasetFactory, add_templates, store_image
from tests.fixtures.images import png_bytes
from tests.fixtures.waiting import wait_for_output


class _ObservedWake(threading.Event):
    """The runner's wake-up event, telling the test when the runner has found no work and gone to sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.sleeping.set()
        return super().wait(timeout)


@pytest.fixture
def embedded(settings):
    settings.JOB_RUNNER = "embedded"
    instance = runner.EmbeddedRunner(poll_seconds=0.2)
    instance._wake = _ObservedWake()
    yield instance
    instance.stop()


@pytest.mark.django_db(transaction=True)
def test_the_embedded_runner_runs_every_job_and_survives_a_crashing_chunk(
    alice, photo_dataset, embedded, monkeypatch, job_ends
):
    add_templates(photo_dataset, 1)
    with runner.use_runner("inline"), monkeypatch.context() as held:
        held.setattr("datasets.jobs.runners.enqueue", lambda job_id: None)
        first, second, third = (job_create(dataset=photo_dataset, owner=alice) for _ in range(3))
    from datasets.jobs import processing

    order = []
    real_process = processing.process_claim

    def flaky(claim):
        order.append(claim.job.id)
        if claim.job.id == first.id:
            raise RuntimeError("boom")
        return real_process(claim)

    monkeypatch.setattr(processing, "process_claim", flaky)
    embedded.start()
    assert all(job_ends.wait(job.id, timeout=30) for job in (first, second, third))
    assert not GenerationJob.objects.filter(status__in=["queued", "running"]).exists()

    assert order[0] == first.id  # one user: oldest job first
    statuses = dict(GenerationJob.objects.values_list("pk", "status"))
    assert statuses == {first.id: "failed", second.id: "succeeded", third.id: "succeeded"}
    first.refresh_from_db()
    assert first.error == "RuntimeError: boom" and first.finished_at
    # The crashed chunk's items were handed back, so a retry can resume them.
    assert not first.items.filter(status=ItemStatus.RUNNING).exists()
    assert embedded.is_alive


@pytest.mark.django_db(transaction=True)
def test_enqueue_wakes_the_embedded_runner_at_once(alice, photo_dataset, embedded, job_ends):
    embedded.poll_seconds = 60  # only a wake-up can make it this fast
    embedded.start()
    # The runner found the queue empty and sleeps for a minute: from here only enqueue() can start the job.
    assert embedded._wake.sleeping.wait(10)
    add_templates(photo_dataset, 1)
    with runner.use_runner("embedded"):
        runner._runners["embedded"] = embedded
        try:
            job = job_create(dataset=photo_dataset, owner=alice)
        finally:
            runner._runners.pop("embedded")
    assert job_ends.wait(job.id, timeout=30), "the job did not run: enqueue() did not wake the runner"
    assert GenerationJob.objects.get(pk=job.pk).status == "succeeded"


@pytest.mark.django_db
def test_leases_of_dead_local_workers_are_released_and_live_ones_left_alone(alice, photo_dataset, run_jobs):
    from tests.fixtures.factories import GenerationJobFactory

    job = GenerationJobFactory(dataset=photo_dataset, owner=alice, status="running")
    host, pid, _nonce, _thread = worker_identity().split(":", 3)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    future = timezone.now() + timezone.timedelta(hours=1)
    holders = {
        "dead process": f"{host}:{dead.pid}:abcd1234:MainThread",
        "same pid, earlier boot": f"{host}:{pid}:00000000:MainThread",
        "this thread": worker_identity(),
        "another host": "elsewhere:1:abcd1234:MainThread",
    }
    items = {}
    for index, (label, worker) in enumerate(holders.items()):
        image = store_image(photo_dataset, f"lease_{index}.png", png_bytes(40, 30, seed=100 + index))
        items[label] = JobItem.objects.create(
            job=job, image=image, index=index, status="running", worker=worker, lease_expires_at=future
        )
    with run_jobs():
        released = leases_release_orphaned()
    assert released == [job.pk]
    status = {label: JobItem.objects.get(pk=item.pk).status for label, item in items.items()}
    assert status == {
        "dead process": "pending",
        "same pid, earlier boot": "pending",
        "this thread": "running",
        "another host": "running",  # recovered by its lease's expiry, not by a guess about its process
    }


@pytest.mark.django_db
def test_an_expired_lease_is_reclaimed_by_another_worker_and_the_late_worker_commits_nothing(
    alice, photo_dataset, run_jobs
):
    from datasets.jobs.services import ItemResult, item_finish, items_claim

    add_templates(photo_dataset, 1)
    with run_jobs():
        job = job_create(dataset=photo_dataset, owner=alice)
    job.refresh_from_db()
    # A finished job: take one item back to "running under a worker elsewhere whose lease expired".
    item = job.items.order_by("index").first()
    before = (job.succeeded_items, job.variant_count)
    JobItem.objects.filter(pk=item.pk).update(
        status="running",
        worker="gone:1:abcd:T",
        lease_expires_at=timezone.now() - timezone.timedelta(seconds=1),
    )
    GenerationJob.objects.filter(pk=job.pk).update(
        status="running", succeeded_items=job.succeeded_items - 1, finished_at=None
    )
    with run_jobs():
        claim = items_claim(worker="new:2:efgh:T", job_id=job.id)
    assert claim is not None and [i.pk for i in claim.items] == [item.pk]
    # The old worker wakes up and tries to commit: fenced out, nothing written.
    late = item_finish(
        worker="gone:1:abcd:T", job=job, item=claim.items[0], result=ItemResult(status="succeeded")
    )
    assert late is None
    assert JobItem.objects.get(pk=item.pk).worker == "new:2:efgh:T"
    with run_jobs():
        from datasets.jobs.processing import process_claim

        process_claim(claim)
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert (job.succeeded_items, job.variant_count) == before
    assert job.variants.filter(image_id=item.image_id).count() == 1


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
        "DECODED_CACHE_DIR": str(settings.DECODED_CACHE_DIR),
        "SAM_BACKEND": "classical",
        "JOB_RUNNER": "inline",
        "HOLD_AT_ITEM": "3",
    }
    script = Path(__file__).with_name("killable_runner.py")
    process = subprocess.Popen(
        [sys.executable, str(script), job.id.hex],
        env=env,
        cwd=django_settings.BASE_DIR,
        stdout=subprocess.PIPE,
        bufsize=0,
    )
    try:
        # Three images committed, the rest claimed: the runner says so and waits there to be killed.
        assert wait_for_output(process.stdout, "holding", timeout=120), "the runner never reached image 4"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()

    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING
    done_before = job.succeeded_items
    assert 3 <= done_before < 8
    assert job.variants.count() == 2 * done_before  # committed with their items, never ahead of them
    interrupted = list(job.items.filter(status=ItemStatus.RUNNING).values_list("index", flat=True))
    assert interrupted and {
        w.split(":")[1] for w in job.items.filter(status="running").values_list("worker", flat=True)
    } == {str(process.pid)}

    assert leases_release_orphaned() == [job.pk]
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
    # Files are named per attempt; the killed attempt's uncommitted files were cleaned up, not left behind.
    stored = set(default_storage.listdir(f"variants/{job.id.hex}")[1])
    referenced = {
        name.rsplit("/", 1)[1] for row in job.variants.values_list("file", "mask_file") for name in row
    }
    assert stored == referenced and len(stored) == 32
    for index in interrupted:
        assert job.items.get(index=index).attempts == 2
    # One "item" event per image over both runs: the killed run's uncommitted work never went out.
    items = Event.objects.filter(channel=f"job-{job.id.hex}", type="item")
    assert items.count() == 8
