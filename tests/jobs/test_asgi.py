"""Live events and downloads through the ASGI app (django.test.AsyncClient), with committed data.

The server side runs sync views in a worker thread with its own database connection, hence
``transaction=True``. Every read of a stream is guarded by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from asgiref.sync import sync_to_async
from django.db.backends.signals import connection_created
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from datasets.jobs.events import JobChannelManager, job_channel
from datasets.jobs.services import job_create, job_retry_failed
from datasets.models import GenerationJob
from tests.fixtures.factories import add_templates

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

JOB_EVENTS = ("status", "item", "done")


class _TokenClient:
    """An AsyncClient sending ``Authorization: Token ...`` (AsyncClient only maps per-request headers)."""

    def __init__(self, key: str) -> None:
        self.client = AsyncClient()
        self.headers = {"Authorization": f"Token {key}"}

    async def get(self, path, data=None):
        return await self.client.get(path, data, headers=self.headers)

    async def post(self, path, data=None, **kwargs):
        return await self.client.post(path, data, headers=self.headers, **kwargs)


def _client(user) -> _TokenClient:
    token, _ = Token.objects.get_or_create(user=user)
    return _TokenClient(token.key)


class SSEReader:
    """Parses ``text/event-stream`` chunks into ``{"event", "id", "data"}`` dicts."""

    def __init__(self, response) -> None:
        self.stream = response.streaming_content.__aiter__()
        self.buffer = ""
        self.events: list[dict] = []

    async def next_event(self) -> dict:
        while "\n\n" not in self.buffer:
            chunk = await self.stream.__anext__()
            self.buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        block, self.buffer = self.buffer.split("\n\n", 1)
        event: dict = {}
        data = []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            if key == "data":
                data.append(value)
            elif key in ("event", "id"):
                event[key] = value
        if not event and not data:
            return await self.next_event()  # the padding comment
        raw = "\n".join(data)
        # stream-open / keep-alive carry non-JSON data; the job events are JSON.
        event["data"] = json.loads(raw) if event.get("event") in JOB_EVENTS else raw
        self.events.append(event)
        return event

    async def until(self, predicate, timeout: float = 20.0) -> list[dict]:
        async def read():
            while True:
                event = await self.next_event()
                if predicate(event):
                    return

        await asyncio.wait_for(read(), timeout)
        return self.events

    async def close(self) -> None:
        await self.stream.aclose()


def _job_events(events: list[dict]) -> list[str]:
    return [
        e["event"] if e["event"] != "status" else f"status:{e['data']['status']}"
        for e in events
        if e.get("event") in JOB_EVENTS
    ]


@pytest.fixture(autouse=True)
def _close_stray_connections():
    """Close every database connection opened during the test, whatever thread or context opened it.

    Django's connections are context-local: the ASGI app's worker thread, the eventstream reader and the
    async test each open their own, and a leftover one keeps the test database from being dropped.
    """
    opened = []

    def remember(sender, connection, **kwargs):
        opened.append(connection)

    connection_created.connect(remember, weak=False, dispatch_uid="tests-jobs-asgi-connections")
    yield
    connection_created.disconnect(dispatch_uid="tests-jobs-asgi-connections")
    for wrapper in opened:
        wrapper.inc_thread_sharing()
        try:
            wrapper.close()
        finally:
            wrapper.dec_thread_sharing()


async def test_a_new_connection_replays_the_whole_job_in_order(alice, photo_dataset):
    add_templates(photo_dataset, 2)
    job = job_create(dataset=photo_dataset, owner=alice)  # inline runner: finished on return
    response = await _client(alice).get(f"/api/jobs/{job.id.hex}/events/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    reader = SSEReader(response)
    events = await reader.until(lambda e: e.get("event") == "done")
    await reader.close()

    assert events[0]["event"] == "stream-open"
    assert _job_events(events) == [
        "status:queued",
        "status:running",
        "item",
        "item",
        "item",
        "item",
        "status:succeeded",
        "done",
    ]
    items = [e["data"] for e in events if e.get("event") == "item"]
    assert [i["filename"] for i in items] == ["astronaut.png", "coffee.png", "camera.png", "chelsea.png"]
    assert all(e["id"].startswith(f"job-{job.id.hex}:") for e in events if e.get("event") in JOB_EVENTS)
    assert events[-1]["data"]["variant_count"] == 4
    # The page's HTML fragments live on their own channel: API clients get JSON only.
    assert not [e for e in events if e.get("event", "").startswith("html-")]


async def test_the_running_event_reaches_a_client_before_any_image_is_done(
    alice, photo_dataset, embedded_runner
):
    add_templates(photo_dataset, 1)
    client = _client(alice)
    created = await client.post(
        f"/api/datasets/{photo_dataset.id.hex}/jobs/", {}, content_type="application/json"
    )
    assert created.status_code == 202
    job_id = created.json()["id"]
    response = await client.get(f"/api/jobs/{job_id}/events/")
    reader = SSEReader(response)
    events = await reader.until(
        lambda e: e.get("event") == "status" and e["data"]["status"] == "running", timeout=5
    )
    # No silent work before the first event: the client hears "running" before any image is finished
    # (speed itself is measured by the benchmark, not asserted here).
    assert events[-1]["data"]["counters"]["processed"] == 0
    assert "item" not in _job_events(events)
    events = await reader.until(lambda e: e.get("event") == "done", timeout=60)
    await reader.close()
    assert _job_events(events)[-2:] == ["status:succeeded", "done"]
    assert events[-1]["data"]["succeeded"] == 4


async def test_resuming_with_the_last_event_id_skips_what_was_seen(alice, photo_dataset, settings):
    add_templates(photo_dataset, 1)
    job = job_create(dataset=photo_dataset, owner=alice, export_mask=True)
    client = _client(alice)
    detail = (await client.get(f"/api/jobs/{job.id.hex}/")).json()
    response = await client.get(f"/api/jobs/{job.id.hex}/events/", {"lastEventId": detail["last_event_id"]})
    reader = SSEReader(response)
    await reader.until(lambda e: e.get("event") == "stream-open")
    # Something new happens after the page rendered: a retry of the whole (canceled) remainder.
    await sync_to_async(GenerationJob.objects.filter(pk=job.pk).update)(status="canceled")
    await sync_to_async(job.items.filter(index=3).update)(status="pending")
    await sync_to_async(job_retry_failed)(job=job)
    events = await reader.until(lambda e: e.get("event") == "done")
    await reader.close()
    assert _job_events(events) == ["status:queued", "status:running", "item", "status:succeeded", "done"]


async def test_alice_cannot_subscribe_to_bobs_job(alice, bob, make_photo_dataset):
    dataset = make_photo_dataset(bob, names=("coffee",))
    add_templates(dataset, 1)
    job = job_create(dataset=dataset, owner=bob)
    response = await _client(alice).get(f"/api/jobs/{job.id.hex}/events/")
    assert response.status_code == 404
    assert json.loads(response.content)["error"] == "not_found"
    anonymous = await AsyncClient().get(f"/api/jobs/{job.id.hex}/events/")
    assert anonymous.status_code == 401

    manager = JobChannelManager()
    channel = job_channel(job.id)
    assert manager.can_read_channel(bob, channel)
    assert not manager.can_read_channel(alice, channel)
    assert not manager.can_read_channel(None, channel)
    assert not manager.can_read_channel(bob, "job-not-a-uuid")
    assert not manager.can_read_channel(bob, f"other-{job.id.hex}")


async def test_an_es_meta_token_cannot_swap_in_another_users_channels(
    alice, bob, make_photo_dataset, settings
):
    """django-eventstream honours ``es-meta`` (a JWT signed with SECRET_KEY naming a user and channels); the job
    stream strips it, so bob's own job URL never carries alice's events whatever token he forges."""
    import jwt

    alice_dataset = make_photo_dataset(alice, names=("coffee",))
    add_templates(alice_dataset, 1)
    alice_job = job_create(dataset=alice_dataset, owner=alice)
    bob_dataset = make_photo_dataset(bob, names=("camera",))
    add_templates(bob_dataset, 1)
    bob_job = job_create(dataset=bob_dataset, owner=bob)
    forged = jwt.encode(
        {"channels": [job_channel(alice_job.id)], "user": alice.pk}, settings.SECRET_KEY, algorithm="HS256"
    )
    response = await _client(bob).get(f"/api/jobs/{bob_job.id.hex}/events/", {"es-meta": forged})
    assert response.status_code == 200
    reader = SSEReader(response)
    events = await reader.until(lambda e: e.get("event") == "done")
    await reader.close()
    job_ids = {e["data"]["job_id"] for e in events if e.get("event") in JOB_EVENTS}
    assert job_ids == {bob_job.id.hex}
    assert all(
        e.get("id", "").startswith(job_channel(bob_job.id)) for e in events if e.get("event") in JOB_EVENTS
    )


async def test_open_streams_are_capped_per_user_with_a_json_error(alice, photo_dataset, settings):
    settings.SSE_MAX_CONNECTIONS_PER_USER = 1
    add_templates(photo_dataset, 1)
    job = job_create(dataset=photo_dataset, owner=alice)
    url = f"/api/jobs/{job.id.hex}/events/"
    first = await _client(alice).get(url)
    reader = SSEReader(first)
    await reader.until(lambda e: e.get("event") == "done")
    second = await _client(alice).get(url)
    assert second.status_code == 429
    body = json.loads(second.content)
    assert body["error"] == "too_many_streams" and body["limit"] == 1
    # The client goes away: the server cancels the response task (as Django's ASGI handler does on a
    # disconnect), which frees the slot.
    listening = asyncio.ensure_future(reader.until(lambda e: False, timeout=60))
    await asyncio.sleep(0)
    listening.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listening
    third = await _client(alice).get(url)
    assert third.status_code == 200
    await SSEReader(third).close()


async def test_the_zip_streams_as_an_async_iterator_under_asgi(alice, photo_dataset):
    import io
    import zipfile

    add_templates(photo_dataset, 1)
    job = job_create(dataset=photo_dataset, owner=alice, compose="each")
    response = await _client(alice).get(f"/api/jobs/{job.id.hex}/download/")
    assert response.status_code == 200 and response.is_async  # not materialised by Django before sending
    body = b""

    async def read():
        nonlocal body
        async for chunk in response.streaming_content:
            body += chunk

    await asyncio.wait_for(read(), 30)
    assert len(body) == int(response["Content-Length"])
    assert len(zipfile.ZipFile(io.BytesIO(body)).namelist()) == 5


async def test_an_export_reads_its_annotations_while_streaming_under_asgi(alice, photo_dataset, monkeypatch):
    import io
    import json
    import zipfile

    from datasets.jobs import exports

    monkeypatch.setattr(exports, "ANNOTATION_CHUNK_IMAGES", 1)  # a query per image, during the stream
    add_templates(photo_dataset, 2)
    job = job_create(dataset=photo_dataset, owner=alice, compose="annotate")
    for fmt in ("coco", "masks"):
        response = await _client(alice).get(f"/api/jobs/{job.id.hex}/export/?format={fmt}")
        assert response.status_code == 200 and response.is_async
        body = b""

        async def read(response=response):
            nonlocal body
            async for chunk in response.streaming_content:
                body += chunk

        await asyncio.wait_for(read(), 60)
        archive = zipfile.ZipFile(io.BytesIO(body))
        assert archive.testzip() is None
        if fmt == "coco":
            assert len(json.loads(archive.read("annotations.json"))["images"]) == 4
        else:
            assert len([n for n in archive.namelist() if n.startswith("masks/")]) == 8
