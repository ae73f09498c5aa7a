"""The job page's live fragments: rendered on ``job_event``, sent as ``html-*`` on the job page channel, replayed
from ``lastEventId`` by the page's SSE endpoint."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.urls import reverse

from datasets.jobs.events import job_page_channel

pytestmark = pytest.mark.django_db


def test_every_job_event_sends_an_html_fragment(
    alice_dataset, alice_template, django_capture_on_commit_callbacks
):
    from datasets.jobs.services import job_create

    sent = []
    with (
        mock.patch("frontend.live.send_event", side_effect=lambda *a, **k: sent.append((a, k))),
        django_capture_on_commit_callbacks(execute=True),
    ):
        job = job_create(dataset=alice_dataset, owner=alice_dataset.owner)
    names = [args[1] for args, _ in sent]
    assert names[0] == "html-status" and names[-1] == "html-done"
    assert names.count("html-item") == 3
    for args, kwargs in sent:
        assert args[0] == job_page_channel(job.id)
        assert kwargs == {"json_encode": False}
    items = [args[2] for args, _ in sent if args[1] == "html-item"]
    assert 'id="item-0"' in items[0] and 'hx-swap-oob="true"' in items[0]
    assert (
        reverse("api-variant-file", args=[job.variants.order_by("image__position").first().public_id])
        in items[0]
    )
    assert 'id="job-progress"' in items[-1] and "3 / 3" in items[-1]
    done = next(args[2] for args, _ in sent if args[1] == "html-done")
    assert "Download ZIP" in done and 'id="job-params"' in done and 'id="current-job-row"' in done


def test_failed_items_update_the_error_list(
    alice_dataset, alice_template, django_capture_on_commit_callbacks
):
    from datasets.jobs.services import job_create

    sent = []
    boom = RuntimeError("decoder exploded")
    with (
        mock.patch("frontend.live.send_event", side_effect=lambda *a, **k: sent.append(a)),
        mock.patch("datasets.jobs.processing.decode_stored_image", side_effect=boom),
        django_capture_on_commit_callbacks(execute=True),
    ):
        job_create(dataset=alice_dataset, owner=alice_dataset.owner)
    items = [a[2] for a in sent if a[1] == "html-item"]
    assert all('id="job-errors"' in html for html in items)
    assert "decoder exploded" in items[-1] and "item-failed" in items[-1]
    done = next(a[2] for a in sent if a[1] == "html-done")
    assert "Retry failed" in done


def test_a_receiver_error_never_breaks_the_job(
    alice_dataset, alice_template, django_capture_on_commit_callbacks
):
    from datasets.jobs.services import job_create

    with (
        mock.patch("frontend.live.render_item", side_effect=ValueError("template bug")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        job = job_create(dataset=alice_dataset, owner=alice_dataset.owner)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.variant_count == 3


async def _read_until(response, marker: str, timeout: float = 10.0) -> str:
    """Read the never-ending stream until ``marker``, then close it (its finally blocks run)."""
    body = ""
    iterator = response.streaming_content.__aiter__()

    async def read():
        nonlocal body
        while marker not in body:
            chunk = await iterator.__anext__()
            body += chunk.decode() if isinstance(chunk, bytes) else chunk
        return body

    try:
        return await asyncio.wait_for(read(), timeout)
    finally:
        if hasattr(iterator, "aclose"):
            await iterator.aclose()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_page_stream_replays_from_last_event_id_and_checks_ownership(
    async_client, settings, photo_png
):
    from django.test import AsyncClient

    from datasets.jobs.services import job_create
    from datasets.services.datasets import dataset_create
    from templates_app.services import template_create
    from tests.factories import UserFactory
    from tests.frontend.conftest import upload_photos

    def setup():
        alice = UserFactory(username="alice")
        bob = UserFactory(username="bob")
        dataset = dataset_create(owner=alice, name="Live")
        images = upload_photos(dataset, photo_png, names=("coffee", "chelsea"))
        template_create(
            dataset=dataset,
            points=[{"x_norm": 0.5, "y_norm": 0.5, "positive": True}],
            reference_image=images[0],
        )
        job = job_create(dataset=dataset, owner=alice)  # inline runner: done on commit, events stored
        return alice, bob, job

    alice, bob, job = await sync_to_async(setup)()
    url = reverse("ui-job-events", args=[job.public_id])
    client = AsyncClient()
    await client.aforce_login(alice)
    response = await client.get(url, {"lastEventId": f"{job_page_channel(job.id)}:0"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    body = await _read_until(response, "event: html-done")
    assert "event: html-item" in body and 'id="item-1"' in body
    assert "event: item" not in body  # the JSON events of API clients live on the job's own channel

    other = AsyncClient()
    await other.aforce_login(bob)
    assert (await other.get(url)).status_code == 404
    anonymous = await AsyncClient().get(url)
    assert anonymous.status_code == 302
    await sync_to_async(connections.close_all)()
