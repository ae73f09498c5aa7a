"""The seed stream's output (the old server's WebP q88 / 1600 px defaults, request overrides, full-size stored
jobs) and its relay (events in order, none missed, no database polling while the job is busy)."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient
from PIL import Image
from rest_framework.authtoken.models import Token

from datasets.image_io import read_file_bytes
from datasets.models import GenerationJob, Variant
from imaging.codecs import decode_image
from legacy import streams
from tests.fixtures.seed_api import (
    SSEReader,
    b64_image,
    b64_mask,
    init_dataset,
    parse_sse,
    post_json,
    read_stream,
)


def _template(client, dataset_id: str) -> dict:
    return post_json(
        client,
        "/sam/dataset/template/save",
        {"dataset_id": dataset_id, "points": [{"x_norm": 0.5, "y_norm": 0.5}], "name": "centre"},
    ).json()


def _run(client, body: dict) -> list:
    return parse_sse(read_stream(post_json(client, "/sam/dataset/apply_stream", body)))


@pytest.mark.django_db(transaction=True)
def test_seed_stream_defaults_are_the_old_servers(settings):
    assert (settings.SEED_OUTPUT_FORMAT, settings.SEED_OUTPUT_QUALITY, settings.SEED_MAX_SIDE) == (
        "webp",
        88,
        1600,
    )


@pytest.mark.django_db(transaction=True)
def test_seed_stream_defaults_webp_resized_while_the_job_keeps_full_size_png(
    alice_api, photo_files, settings
):
    settings.SEED_MAX_SIDE = 120  # the test photos are 192 px: the stream must shrink them
    body = init_dataset(alice_api, photo_files, names=["chelsea.png", "camera.png"])
    template = _template(alice_api, body["dataset_id"])
    events = _run(
        alice_api,
        {"dataset_id": body["dataset_id"], "edits": {template["id"]: {"brightness": 0.3}}, "export_mask": 1},
    )
    assert events[-1] == "[DONE]" and events[-2]["succeeded"] == 2
    job = GenerationJob.objects.get(pk=events[-2]["job_id"])
    assert job.output_format == "png"
    rendition = streams.Rendition(fmt="webp", quality=88, max_side=120)
    for event in events[:-2]:
        streamed = b64_image(event["variant_png"])
        assert streamed.format == "WEBP" and max(streamed.size) == 120
        mask = b64_mask(event["mask_png"])
        assert mask.shape == (streamed.size[1], streamed.size[0])
        variant = Variant.objects.get(pk=event["variant_id"])
        stored = read_file_bytes(variant.file)
        full = Image.open(io.BytesIO(stored))
        assert full.format == "PNG" and full.size == (variant.width, variant.height) and max(full.size) > 120
        # Exactly the stored variant, resized and encoded at the configured quality.
        assert base64.b64decode(event["variant_png"]) == rendition.encode(decode_image(stored).rgb)


@pytest.mark.django_db(transaction=True)
def test_seed_stream_settings_and_a_request_that_overrides_them(alice_api, photo_files, settings):
    body = init_dataset(alice_api, photo_files, names=["chelsea.png"])
    template = _template(alice_api, body["dataset_id"])
    request = {"dataset_id": body["dataset_id"], "edits": {template["id"]: {"hue": 40}}}

    settings.SEED_OUTPUT_FORMAT, settings.SEED_OUTPUT_QUALITY = "jpeg", 95
    high = _run(alice_api, request)[0]
    settings.SEED_OUTPUT_QUALITY = 20
    low = _run(alice_api, request)[0]
    assert b64_image(high["variant_png"]).format == b64_image(low["variant_png"]).format == "JPEG"
    assert len(low["variant_png"]) < len(high["variant_png"])  # the quality setting is used

    # A request's own format wins, for the stream and for the stored job; full size under the max side.
    events = _run(alice_api, {**request, "format": "png"})
    streamed = b64_image(events[0]["variant_png"])
    job = GenerationJob.objects.get(pk=events[-2]["job_id"])
    variant = Variant.objects.get(job=job)
    assert streamed.format == "PNG" and job.output_format == "png"
    assert streamed.size == (variant.width, variant.height)
    assert np.array_equal(np.asarray(streamed), decode_image(read_file_bytes(variant.file)).rgb)

    settings.SEED_MAX_SIDE = 100  # the maximum side applies to a requested format too
    events = _run(alice_api, {**request, "format": "webp"})
    streamed = b64_image(events[0]["variant_png"])
    assert streamed.format == "WEBP" and max(streamed.size) == 100
    job = GenerationJob.objects.get(pk=events[-2]["job_id"])
    assert job.output_format == "webp" and Variant.objects.get(job=job).width == 192


# -- the relay ---------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def _close_async_connections():
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def seeded(alice, alice_api, photo_files):
    body = init_dataset(alice_api, photo_files)
    template = _template(alice_api, body["dataset_id"])
    token, _ = Token.objects.get_or_create(user=alice)
    return {"dataset": body["dataset_id"], "template": template["id"], "token": token.key}


async def _start(seeded) -> SSEReader:
    response = await AsyncClient().post(
        "/api/sam/dataset/apply_stream",
        data=json.dumps({"dataset_id": seeded["dataset"], "edits": {seeded["template"]: {"gamma": 0.3}}}),
        content_type="application/json",
        headers={"Authorization": f"Token {seeded['token']}"},
    )
    assert response.status_code == 200 and response.streaming
    return SSEReader(response)


@pytest.fixture
def counted_reads(monkeypatch):
    """Counts the relay's database work: reads of the stored event log and per-event row loads."""
    from datasets.jobs import relay

    calls = {"n": 0}

    def counting(original):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(relay, "stored_events_after", counting(relay.stored_events_after))
    monkeypatch.setattr(streams, "_on_event", counting(streams._on_event))
    return calls


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_close_async_connections")
async def test_relay_wakes_on_events_in_order_and_never_polls_while_idle(
    seeded, embedded_runner, encode_gate, counted_reads, monkeypatch
):
    monkeypatch.setattr(streams, "KEEPALIVE_SECONDS", 0.2)
    monkeypatch.setattr(streams, "FALLBACK_SECONDS", 30.0)
    encode_gate.blocked_from = 2  # image 0 completes, then the runner is held
    reader = await _start(seeded)
    first = await reader.next_data()
    assert first["index"] == 0
    assert encode_gate.waiting.wait(10)

    # The runner is held: keep-alives flow, but the relay does not touch the database. (The first
    # keep-alive marks the quiet: wake-ups for events stored just before it may still read.)
    assert await reader.next_event(timeout=5) is None
    reads_before = counted_reads["n"]
    keepalives = 0
    while keepalives < 5:  # ~1 s of idle stream
        assert await reader.next_event(timeout=5) is None
        keepalives += 1
    assert counted_reads["n"] == reads_before
    assert reader.comments[-1] == ": keep-alive"

    encode_gate.release()
    rest = []
    while (event := await reader.next_data()) != "[DONE]":
        rest.append(event)
    done = rest.pop()
    assert [e["index"] for e in rest] == [1, 2, 3]  # in order, none missed, none twice
    assert done["done"] is True and (done["succeeded"], done["failed"]) == (4, 0)
    # Database work follows the events: a log read per wake-up (plus one to see it drained) and one row
    # load per relayed event, nothing per unit of time.
    assert counted_reads["n"] <= 3 * (2 + 4 + 2)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_close_async_connections")
async def test_relay_misses_nothing_when_notifications_are_lost(seeded, embedded_runner, monkeypatch):
    """The stored log is the source of truth: with every push dropped, the slow re-read still relays all."""
    import datasets.jobs.events

    monkeypatch.setattr(datasets.jobs.events, "_push_to_listeners", lambda *args, **kwargs: None)
    monkeypatch.setattr(streams, "KEEPALIVE_SECONDS", 0.1)
    monkeypatch.setattr(streams, "FALLBACK_SECONDS", 0.3)
    reader = await _start(seeded)
    events = []
    while (event := await asyncio.wait_for(reader.next_data(), 60)) != "[DONE]":
        events.append(event)
    assert [e["index"] for e in events[:-1]] == [0, 1, 2, 3]
    assert events[-1]["done"] is True and events[-1]["succeeded"] == 4


@pytest.mark.django_db(transaction=True)
def test_relay_takes_variant_bytes_from_the_runners_buffer_else_storage(alice_api, photo_files, monkeypatch):
    from datasets.jobs.outputs import recent_outputs

    body = init_dataset(alice_api, photo_files, names=["chelsea.png", "camera.png"])
    template = _template(alice_api, body["dataset_id"])
    request = {"dataset_id": body["dataset_id"], "edits": {template["id"]: {"hue": 40}}, "format": "png"}
    reads = []
    original = streams.read_file_bytes
    monkeypatch.setattr(streams, "read_file_bytes", lambda file: reads.append(file.name) or original(file))

    events = _run(alice_api, request)  # the inline runner ran in this process: its buffers are used
    assert events[-2]["succeeded"] == 2 and reads == []
    for event in events[:-2]:
        variant = Variant.objects.get(pk=event["variant_id"])
        assert base64.b64decode(event["variant_png"]) == original(variant.file)

    recent_outputs.clear()  # e.g. the job ran in another process: the relay reads storage
    replay = asyncio.run(_collect(streams.job_relay(GenerationJob.objects.get(pk=events[-2]["job_id"]).id)))
    assert [e["variant_png"] for e in replay[:-2]] == [e["variant_png"] for e in events[:-2]]
    assert len(reads) == 2


async def _collect(stream) -> list:
    return parse_sse("".join([chunk async for chunk in stream]).encode())
