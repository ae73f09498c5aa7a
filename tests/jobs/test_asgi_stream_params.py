"""Event-stream query parameters through the ASGI app: GRIP-only parameters are ignored and a malformed
``lastEventId`` / ``Last-Event-ID`` is a 400 JSON error, on the JSON and the page channels."""

from __future__ import annotations

import json

import pytest
from django.test import AsyncClient

from datasets.jobs.services import job_create
from tests.fixtures.factories import add_templates
from tests.jobs.test_asgi import SSEReader, _client, _close_stray_connections  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def finished_job(alice, photo_dataset):
    add_templates(photo_dataset, 1)
    return job_create(dataset=photo_dataset, owner=alice)


@pytest.mark.parametrize(
    "params", [{"recover": "true"}, {"link": "next"}, {"recover": "true", "link": "next"}]
)
async def test_grip_parameters_are_ignored(alice, finished_job, params):
    response = await _client(alice).get(f"/api/jobs/{finished_job.id.hex}/events/", params)

    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    reader = SSEReader(response)
    events = await reader.until(lambda e: e.get("event") == "done")
    await reader.close()
    assert events[-1]["data"]["job_id"] == finished_job.id.hex


def _assert_invalid_event_id(response):
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    body = json.loads(response.content)
    assert body["error"] == "invalid_event_id" and body["detail"]


@pytest.mark.parametrize("value", ["error", "garbage", "job-x:", "job-x:1,oops", "a:" + "9" * 40])
async def test_a_malformed_last_event_id_is_a_400_json_error(alice, finished_job, value):
    url = f"/api/jobs/{finished_job.id.hex}/events/"
    client = _client(alice)

    _assert_invalid_event_id(await client.get(url, {"lastEventId": value}))
    _assert_invalid_event_id(await client.client.get(url, headers={**client.headers, "Last-Event-ID": value}))


async def test_a_malformed_last_event_id_on_the_page_channel_is_a_400_json_error(alice, finished_job):
    from asgiref.sync import sync_to_async

    client = AsyncClient()
    await sync_to_async(client.force_login)(alice)
    url = f"/jobs/{finished_job.id.hex}/events/"

    _assert_invalid_event_id(await client.get(url, {"lastEventId": "garbage"}))
    _assert_invalid_event_id(await client.get(url, headers={"Last-Event-ID": "error"}))


async def test_a_well_formed_last_event_id_still_resumes(alice, finished_job):
    from asgiref.sync import sync_to_async

    from datasets.jobs.events import job_last_event_id

    last = await sync_to_async(job_last_event_id)(finished_job)
    response = await _client(alice).get(f"/api/jobs/{finished_job.id.hex}/events/", {"lastEventId": last})

    assert response.status_code == 200
    await SSEReader(response).close()
