"""The Celery runner with real worker processes: two workers share one job, a SIGKILLed worker's items are
finished by the other after its lease, and the events they produce reach an SSE client of the web process.

Workers are started as an operator would (``celery -A samsite worker``) against Redis at 127.0.0.1:6379 (a
database of its own) and the test database, with the tiny SAM checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection

from datasets.jobs.services import job_create
from datasets.models import GenerationJob, JobItem
from tests.fixtures.factories import DatasetFactory, add_templates, store_image
from tests.fixtures.images import png_bytes
from tests.fixtures.waiting import wait_until

BROKER = "redis://127.0.0.1:6379/14"
#: The workers are other processes that send this one no signal (the third test listens on Redis, where
#: ``heard_done`` blocks): waits poll their committed rows, or that listener, up to this many seconds.
WORKER_SECONDS = 900

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(1800)]


def _redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(BROKER).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def celery_env(settings, use_tiny_sam, tmp_path):
    if not _redis_available():
        pytest.fail("Redis at 127.0.0.1:6379 is required for the Celery tests (.ci/run starts it)")
    queue = f"samgen-test-{uuid.uuid4().hex[:8]}"
    redis.Redis.from_url(BROKER).flushdb()
    from samsite.celery import app

    previous = (app.conf.broker_url, app.conf.task_default_queue)
    app.conf.broker_url = BROKER
    app.conf.task_default_queue = queue
    settings.JOB_RUNNER = "celery"
    settings.JOB_CHUNK_SIZE = 2
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "DEBUG": "true",
        "SECRET_KEY": "celery-test",
        "CELERY_BROKER_URL": BROKER,
        "CELERY_QUEUE": queue,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "EMBED_CACHE_DIR": str(settings.EMBED_CACHE_DIR),
        "SAM_BACKEND": "sam",
        "SAM_CHECKPOINT": str(use_tiny_sam),
        "JOB_RUNNER": "celery",
        "JOB_CHUNK_SIZE": "2",
        "JOB_LEASE_SECONDS": "60",
        "WORKER_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    workers: list[subprocess.Popen] = []

    def start(name: str, *, lease_seconds: int = 60, extra_env: dict | None = None) -> subprocess.Popen:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "samsite",
                "worker",
                "--pool=solo",
                "-Q",
                queue,
                "-n",
                f"{name}@%h",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env={**env, "JOB_LEASE_SECONDS": str(lease_seconds), **(extra_env or {})},
            cwd=django_settings.BASE_DIR,
        )
        workers.append(process)
        return process

    yield start
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    app.conf.broker_url, app.conf.task_default_queue = previous


def _job_over(owner, count: int):
    dataset = DatasetFactory(owner=owner)
    for index in range(count):
        store_image(dataset, f"img_{index}.png", png_bytes(64, 48, seed=index))
    add_templates(dataset, 2)
    return dataset


def _assert_exactly_once(job: GenerationJob, count: int) -> None:
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert (job.succeeded_items, job.failed_items, job.variant_count) == (count, 0, count)
    pairs = Counter(job.variants.values_list("image_id", "template_key"))
    assert len(pairs) == count and set(pairs.values()) == {1}
    from django_eventstream.models import Event

    events = Counter(Event.objects.filter(channel=f"job-{job.id.hex}").values_list("type", flat=True))
    assert events["item"] == count and events["done"] == 1


def test_two_celery_workers_process_one_job_together_exactly_once(alice, celery_env):
    dataset = _job_over(alice, 40)
    celery_env("w1")
    celery_env("w2")
    job = job_create(dataset=dataset, owner=alice)
    wait_until(lambda: GenerationJob.objects.get(pk=job.pk).is_terminal, timeout=WORKER_SECONDS, interval=0.2)
    _assert_exactly_once(job, 40)
    ran_by = {worker.split(":")[1] for worker in job.items.values_list("worker", flat=True)}
    assert len(ran_by) == 2  # both worker processes did work


def test_a_sigkilled_worker_loses_only_its_lease(alice, celery_env):
    dataset = _job_over(alice, 16)
    victim = celery_env("victim", lease_seconds=15)
    job = job_create(dataset=dataset, owner=alice)
    # The victim holds a chunk and has committed at least one image: kill it mid-job.
    wait_until(
        lambda: GenerationJob.objects.get(pk=job.pk).succeeded_items >= 1,
        timeout=WORKER_SECONDS,
        interval=0.2,
    )
    held = list(JobItem.objects.filter(job=job, status="running").values_list("worker", flat=True).distinct())
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not GenerationJob.objects.get(pk=job.pk).is_terminal
    celery_env("rescuer", lease_seconds=15)
    wait_until(lambda: GenerationJob.objects.get(pk=job.pk).is_terminal, timeout=WORKER_SECONDS, interval=0.2)
    _assert_exactly_once(job, 16)
    if held:  # the victim's in-flight items were redone by the rescuer after the lease expired
        assert job.items.filter(attempts__gte=2).exists()


def test_events_of_a_worker_process_cross_to_the_web_process_in_order_and_resume(alice, celery_env):
    """The worker publishes every stored event on Redis (EVENTSTREAM_REDIS), which is how each web process's
    listeners hear it live; the stored events are the truth a client resumes from with ``lastEventId``."""
    import json

    dataset = _job_over(alice, 6)
    bus = redis.Redis.from_url(BROKER).pubsub()
    bus.subscribe("events_channel")
    celery_env("w1", extra_env={"REDIS_URL": BROKER})
    job = job_create(dataset=dataset, owner=alice)
    channel = f"job-{job.id.hex}"
    published = []

    def heard_done():
        while (message := bus.get_message(timeout=1.0)) is not None:
            if message["type"] == "message":
                data = json.loads(message["data"])
                if data["channel"] == channel:
                    published.append(data)
        return any(entry["event_type"] == "done" for entry in published)

    wait_until(heard_done, timeout=WORKER_SECONDS, interval=0.2)
    bus.close()
    kinds = [entry["event_type"] for entry in published]
    assert kinds.count("item") == 6 and kinds[-1] == "done"
    ids = [int(entry["pub_id"]) for entry in published]
    assert ids == sorted(ids)  # in the order they were committed
    indexes = sorted(
        json.loads(entry["data"])["index"] for entry in published if entry["event_type"] == "item"
    )
    assert indexes == list(range(6))

    # Resume from the third item event: the stored events after it, in order (what a stream replays from
    # ``lastEventId``; the REST stream's resume is tested in test_asgi).
    third = [entry for entry in published if entry["event_type"] == "item"][2]
    from datasets.jobs.relay import stored_events_after

    rest = stored_events_after(channel, int(third["pub_id"]))
    assert [event.type for event in rest] == kinds[kinds.index("item") + 3 :]
    assert [event.id for event in rest] == ids[ids.index(int(third["pub_id"])) + 1 :]
