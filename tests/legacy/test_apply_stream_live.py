"""apply_stream read incrementally through the ASGI path (AsyncClient), with the embedded job runner:
the first event arrives while the job is still running, keep-alives flow while an image is held, and a client
that goes away does not stop the job."""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from datasets.models import GenerationJob, JobSource, JobStatus, Variant
from legacy import streams
from tests.fixtures.seed_api import SSEReader, init_dataset, parse_sse, post_json

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest_asyncio.fixture(autouse=True)
async def _close_async_connections():
    """The ORM calls made from the event loop run in asgiref's sync thread: close its connection after."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def seeded(alice, alice_api, photo_files):
    """alice's dataset of the four photos with one template on every image."""
    body = init_dataset(alice_api, photo_files)
    template = post_json(
        alice_api,
        "/sam/dataset/template/save",
        {"dataset_id": body["dataset_id"], "points": [{"x_norm": 0.5, "y_norm": 0.5}], "name": "centre"},
    ).json()
    token, _ = Token.objects.get_or_create(user=alice)
    return {"dataset": body["dataset_id"], "template": template["id"], "token": token.key}


async def _start(seeded):
    client = AsyncClient()
    response = await client.post(
        "/api/sam/dataset/apply_stream",
        data=json.dumps(
            {"dataset_id": seeded["dataset"], "edits": {seeded["template"]: {"brightness": 0.3}}}
        ),
        content_type="application/json",
        headers={"Authorization": f"Token {seeded['token']}"},
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response.streaming
    return response


@pytest.mark.asyncio
async def test_events_arrive_while_the_job_runs(seeded, embedded_runner, encode_gate, monkeypatch):
    monkeypatch.setattr(streams, "KEEPALIVE_SECONDS", 0.3)
    # The runner encodes image N+1 while it finishes image N: holding the 2nd encoder call lets exactly
    # image 0 complete.
    encode_gate.blocked_from = 2
    response = await _start(seeded)
    reader = SSEReader(response)
    opening = await reader.next_event(timeout=2)
    # The stream opens with a comment before any image event: no silent precompute before the first byte.
    assert opening is None and reader.comments[0].startswith(": job ")

    first = await reader.next_data()
    assert first["index"] == 0 and first["variant_png"]
    # the runner is held on a later image: the job has not ended, yet the client already has an image
    job = await GenerationJob.objects.aget(pk=response["X-Job-Id"])
    assert job.status == JobStatus.RUNNING and job.source == JobSource.SEED
    assert encode_gate.waiting.wait(10)

    # nothing finishes while the gate is closed: the stream sends keep-alive comments meanwhile
    before = len(reader.comments)
    assert await reader.next_event(timeout=5) is None
    assert len(reader.comments) > before and reader.comments[-1] == ": keep-alive"

    encode_gate.release()
    rest = []
    while (event := await reader.next_data()) != "[DONE]":
        rest.append(event)
    done = rest.pop()
    assert [e["index"] for e in rest] == [1, 2, 3]
    assert done["done"] is True and done["succeeded"] == 4 and done["job_id"] == response["X-Job-Id"]


@pytest.mark.asyncio
async def test_a_client_that_disconnects_does_not_stop_the_job(
    seeded, embedded_runner, encode_gate, job_ends
):
    response = await _start(seeded)
    reader = SSEReader(response)
    first = await reader.next_data()
    assert first["index"] == 0
    await reader.chunks.aclose()  # the client goes away mid-run
    encode_gate.release()

    # The runner's thread sends the job's last event with nobody listening; wait for it off the event loop.
    assert await asyncio.to_thread(job_ends.wait, response["X-Job-Id"], timeout=20)
    job = await GenerationJob.objects.aget(pk=response["X-Job-Id"])
    assert job.status == JobStatus.SUCCEEDED and job.succeeded_items == 4
    assert await Variant.objects.filter(job=job).acount() == 4

    # the run stays readable: a later relay of the same job replays it whole
    events = []
    async for chunk in streams.job_relay(job.id):
        events.append(chunk)
    replay = parse_sse("".join(events).encode())
    assert [e["index"] for e in replay[:-2]] == [0, 1, 2, 3] and replay[-1] == "[DONE]"
    assert await sync_to_async(lambda: job.dataset.owner.username)() == "alice"
