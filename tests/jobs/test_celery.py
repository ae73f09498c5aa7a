"""The Celery runner with real worker processes: two workers share one job, a SIGKILLed worker's items are
finished by the other after its lease, and the events they produce reach an SSE client of the web process.

Workers are started as an operator would (``celery -A samsite worker``) against Redis at 127.0.0.1:6379 (a
database of its own) and the test database, with the tiny SAM checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
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
        "DECODED_CACHE_DIR": str(settings.DECODED_CACHE_DIR),
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
        name = f"{name}-{queue}"  # unique on this broker: ``ready`` pings exactly these workers
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
        process.node_name = f"{name}@{socket.gethostname()}"
        workers.append(process)
        return process

    def ready(*processes: subprocess.Popen) -> None:
        """Wait until every one of ``processes`` answers a ping and the queue is empty (their start-up sweep
        tasks are done), so what follows is the only work they get."""
        names = {process.node_name for process in processes}

        def answering():
            replies = app.control.ping(destination=sorted(names), timeout=1.0)
            return {name for reply in replies for name in reply} >= names

        wait_until(answering, timeout=WORKER_SECONDS, interval=0.2)
        wait_until(
            lambda: redis.Redis.from_url(BROKER).llen(queue) == 0, timeout=WORKER_SECONDS, interval=0.2
        )

    start.ready = ready
    start.env = env
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
    """Both workers run before the job exists; one is SIGKILLed while it holds a live lease. The other, without
    any restart, finishes the job: the killed worker's message would only come back after the broker's
    visibility timeout (hours), so the surviving worker's own tasks must pick up the freed items."""
    dataset = _job_over(alice, 16)
    victim = celery_env("victim", lease_seconds=15)
    survivor = celery_env("survivor", lease_seconds=15)
    celery_env.ready(victim, survivor)
    job = job_create(dataset=dataset, owner=alice)
    victims = JobItem.objects.filter(job=job, worker__contains=f":{victim.pid}:")

    def victim_holds_a_live_lease_mid_job():
        from django.utils import timezone

        if GenerationJob.objects.get(pk=job.pk).succeeded_items < 1:
            return []
        return list(
            victims.filter(status="running", lease_expires_at__gt=timezone.now()).values_list("pk", flat=True)
        )

    held = wait_until(victim_holds_a_live_lease_mid_job, timeout=WORKER_SECONDS, interval=0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not GenerationJob.objects.get(pk=job.pk).is_terminal
    wait_until(lambda: GenerationJob.objects.get(pk=job.pk).is_terminal, timeout=WORKER_SECONDS, interval=0.2)
    assert survivor.poll() is None  # no worker was restarted: the survivor did it
    _assert_exactly_once(job, 16)
    # The items the victim held when it died were redone by the survivor.
    redone = JobItem.objects.filter(pk__in=held)
    assert all(item.attempts >= 2 and f":{survivor.pid}:" in item.worker for item in redone)
    assert JobItem.objects.filter(job=job, worker__contains=f":{survivor.pid}:").count() >= len(held)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sse_events(response):
    """The ``{"event", "id", "data"}`` of a ``text/event-stream`` response, as they arrive."""
    buffer = ""
    for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
        buffer += chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event: dict = {}
            data = []
            for line in block.split("\n"):
                key, _, value = line.partition(": ")
                if key == "data":
                    data.append(value)
                elif key in ("event", "id"):
                    event[key] = value
            if event.get("event") in ("status", "item", "done"):
                event["data"] = json.loads("\n".join(data))
            if event:
                yield event


def test_an_sse_client_of_the_web_process_hears_a_worker_process_live_and_resumes(alice, celery_env):
    """A real web process (uvicorn, its own settings with REDIS_URL) and a Celery worker process: an SSE client
    connected before the worker starts receives the worker's ``item`` events live and in order (they can only
    reach the web process through Redis), then reconnects with Last-Event-ID and gets what followed."""
    import requests
    from rest_framework.authtoken.models import Token

    dataset = _job_over(alice, 6)
    token = Token.objects.create(user=alice)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "samsite.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**celery_env.env, "REDIS_URL": BROKER, "SAM_PRELOAD": "false"},
        cwd=django_settings.BASE_DIR,
    )
    try:

        def web_answers():
            try:
                return requests.get(f"{base}/health", timeout=60).status_code == 200
            except requests.RequestException:  # not listening yet
                return web.poll() is not None  # it exited: fail below, not by waiting

        wait_until(web_answers, timeout=WORKER_SECONDS, interval=0.2)
        assert web.poll() is None
        job = job_create(dataset=dataset, owner=alice)  # queued: no worker runs yet
        url = f"{base}/api/jobs/{job.id.hex}/events/"
        headers = {"Authorization": f"Token {token.key}", "Accept": "text/event-stream"}
        with requests.get(url, headers=headers, stream=True, timeout=(10, WORKER_SECONDS)) as stream:
            assert stream.status_code == 200
            events = _sse_events(stream)
            assert next(e for e in events if e.get("event") == "stream-open")
            celery_env("w1", extra_env={"REDIS_URL": BROKER})
            heard = []
            for event in events:
                if event.get("event") in ("status", "item", "done"):
                    heard.append(event)
                    if event["event"] == "done":
                        break
        kinds = [event["event"] for event in heard]
        assert kinds.count("item") == 6 and kinds[-1] == "done"
        items = [event for event in heard if event["event"] == "item"]
        assert [event["data"]["index"] for event in items] == list(range(6))  # in the order committed
        assert GenerationJob.objects.get(pk=job.pk).status == "succeeded"

        # Reconnect after the third item event: the stream resumes right after it.
        third = items[2]
        resumed = []
        with requests.get(
            url, headers={**headers, "Last-Event-ID": third["id"]}, stream=True, timeout=(10, WORKER_SECONDS)
        ) as stream:
            assert stream.status_code == 200
            for event in _sse_events(stream):
                if event.get("event") in ("status", "item", "done"):
                    resumed.append(event)
                    if event["event"] == "done":
                        break
        after = heard[heard.index(third) + 1 :]
        assert [(e["event"], e["id"]) for e in resumed] == [(e["event"], e["id"]) for e in after]
    finally:
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(20)
        except subprocess.TimeoutExpired:
            web.kill()


@pytest.mark.django_db
def test_follow_ups_cover_only_uncovered_chunks_and_one_lease_expiry_check(
    alice, held_jobs, monkeypatch, settings
):
    """What keeps ``celery -A samsite worker`` alone finishing every job, without fan-out: after its chunk a task
    sends one task per claimable chunk the queue does not cover, and, when only leased work is left, one task
    for the first lease expiry however many workers go idle at once (a Redis key), again once that one ran."""
    from unittest import mock

    from datasets.jobs import celery_runner
    from datasets.jobs.services import items_claim, work_outlook
    from datasets.jobs.tasks import process_chunk
    from samsite.celery import app

    if not _redis_available():
        pytest.fail("Redis at 127.0.0.1:6379 is required for the Celery tests (.ci/run starts it)")
    monkeypatch.setattr(app.conf, "broker_url", BROKER)
    monkeypatch.setattr(celery_runner, "FOLLOW_UP_KEY", f"samgen-test:lease-check:{uuid.uuid4().hex}")
    settings.JOB_CHUNK_SIZE = 2
    job = job_create(dataset=_job_over(alice, 5), owner=alice)
    sent = mock.patch.object(process_chunk, "delay")
    scheduled = mock.patch.object(process_chunk, "apply_async")
    with (
        sent as delay,
        scheduled as apply_async,
        mock.patch.object(celery_runner, "queued_tasks", return_value=1),
    ):
        assert work_outlook().claimable_chunks == 3
        assert celery_runner.follow_ups_send(work_outlook()) == 2  # one chunk is covered by the queued task
        assert delay.call_count == 2 and apply_async.call_count == 0
    for _ in range(3):
        items_claim(worker="elsewhere:1:abcd:T", job_id=job.id)
    outlook = work_outlook()
    assert outlook.claimable_chunks == 0 and outlook.next_lease_expiry is not None
    with sent as delay, scheduled as apply_async:
        assert [celery_runner.follow_ups_send(work_outlook()) for _ in range(3)] == [1, 0, 0]
        assert delay.call_count == 0
        assert apply_async.call_args.kwargs["kwargs"] == {"follow_up": True}
        assert 1 <= apply_async.call_args.kwargs["countdown"] <= settings.JOB_LEASE_SECONDS + 1
        celery_runner.follow_up_started()  # the check runs: the next one may be scheduled
        assert celery_runner.follow_ups_send(work_outlook()) == 1
    redis.Redis.from_url(BROKER).delete(celery_runner.FOLLOW_UP_KEY)
    JobItem.objects.filter(job=job).update(status="succeeded")
    GenerationJob.objects.filter(pk=job.pk).update(status="succeeded")
    assert work_outlook().idle and celery_runner.follow_ups_send(work_outlook()) == 0
