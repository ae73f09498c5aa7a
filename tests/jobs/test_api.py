"""The jobs REST API: create (202), history, detail, cancel, retry, items, variants, files, ownership."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage

from datasets.models import GenerationJob, JobStatus
from tests.fixtures.factories import DatasetFactory, TemplateFactory, add_templates

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_job(alice, alice_api, photo_dataset, run_jobs):
    add_templates(photo_dataset, 2)
    with run_jobs():
        response = alice_api.post(
            f"/api/datasets/{photo_dataset.id.hex}/jobs/",
            {"compose": "each", "export_mask": True},
            format="json",
        )
    assert response.status_code == 202
    return GenerationJob.objects.get(pk=response.json()["id"])


def test_post_queues_a_job_and_answers_202_with_its_urls(alice_api, photo_dataset, held_jobs, run_jobs):
    t1, t2 = add_templates(photo_dataset, 2)
    with run_jobs():
        response = alice_api.post(
            f"/api/datasets/{photo_dataset.id.hex}/jobs/",
            {
                "templates": [{"template_id": t2.id.hex, "edits": {"hue": 30}}, {"template_id": t1.id.hex}],
                "compose": "each",
                "format": "webp",
                "export_mask": True,
            },
            format="json",
        )
    assert response.status_code == 202
    body = response.json()
    job = GenerationJob.objects.get(pk=body["id"])
    assert held_jobs == [job.id]
    assert response["Location"] == f"/api/jobs/{job.id.hex}/"
    assert body["status"] == "queued" and body["compose"] == "each" and body["format"] == "webp"
    assert body["export_mask"] is True and body["source"] == "api"
    assert body["counters"]["total"] == 4 and body["counters"]["processed"] == 0
    assert body["urls"] == {
        "self": f"/api/jobs/{job.id.hex}/",
        "events": f"/api/jobs/{job.id.hex}/events/",
        "items": f"/api/jobs/{job.id.hex}/items/",
        "variants": f"/api/jobs/{job.id.hex}/variants/",
        "download": f"/api/jobs/{job.id.hex}/download/",
        "export": f"/api/jobs/{job.id.hex}/export/",
        "cancel": f"/api/jobs/{job.id.hex}/cancel/",
        "retry": f"/api/jobs/{job.id.hex}/retry/",
    }
    # Save order wins over request order; t1 keeps its default edits, t2 gets the given ones.
    assert [t["template_id"] for t in body["templates"]] == [t1.id.hex, t2.id.hex]
    assert body["templates"][0]["edits"]["brightness"] == 0.25
    assert body["templates"][1]["edits"]["hue"] == 30 and body["templates"][1]["edits"]["brightness"] == 0
    assert body["first_event_id"] == f"job-{job.id.hex}:0"
    assert body["last_event_id"].startswith(f"job-{job.id.hex}:")


def test_post_without_templates_uses_all_with_their_defaults(alice_api, photo_dataset, held_jobs):
    add_templates(photo_dataset, 3)
    response = alice_api.post(f"/api/datasets/{photo_dataset.id.hex}/jobs/", {}, format="json")
    assert response.status_code == 202
    assert [t["name"] for t in response.json()["templates"]] == ["T1", "T2", "T3"]


@pytest.mark.parametrize(
    ("payload", "code", "extra"),
    [
        (
            {"templates": [{"template_id": "PLACEHOLDER", "edits": {"brightness": 5}}]},
            "invalid_edits",
            "field",
        ),
        ({"templates": [{"template_id": "PLACEHOLDER", "edits": {"sparkle": 1}}]}, "invalid_edits", "field"),
        ({"templates": [{"template_id": "0" * 32}]}, "template_not_found", "index"),
        ({"templates": []}, "no_templates", None),
        ({"compose": "collage"}, "validation_error", "fields"),
        ({"format": "gif"}, "validation_error", "fields"),
    ],
)
def test_post_rejects_bad_input_with_a_clear_error(alice_api, photo_dataset, held_jobs, payload, code, extra):
    template = add_templates(photo_dataset, 1)[0]
    for entry in payload.get("templates", []):
        if entry["template_id"] == "PLACEHOLDER":
            entry["template_id"] = template.id.hex
    response = alice_api.post(f"/api/datasets/{photo_dataset.id.hex}/jobs/", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == code
    if extra:
        assert extra in body
    if code == "invalid_edits":
        (named,) = payload["templates"][0]["edits"]  # the one slider the request sets
        assert body["field"] == named
    assert not GenerationJob.objects.exists() and held_jobs == []


def test_a_dataset_without_templates_cannot_start_a_job(alice_api, photo_dataset, held_jobs):
    response = alice_api.post(f"/api/datasets/{photo_dataset.id.hex}/jobs/", {}, format="json")
    assert response.status_code == 400 and response.json()["error"] == "no_templates"


def test_another_datasets_template_is_refused(alice, alice_api, photo_dataset, held_jobs):
    other = TemplateFactory(dataset=DatasetFactory(owner=alice))
    add_templates(photo_dataset, 1)
    response = alice_api.post(
        f"/api/datasets/{photo_dataset.id.hex}/jobs/",
        {"templates": [{"template_id": other.id.hex}]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "template_not_found",
        "detail": "no such template in this dataset",
        "index": 0,
    }


def test_the_detail_reports_counters_timings_cache_and_errors(alice_api, finished_job):
    body = alice_api.get(f"/api/jobs/{finished_job.id.hex}/").json()
    assert body["status"] == "succeeded"
    assert body["counters"] == {
        "total": 4,
        "processed": 4,
        "succeeded": 4,
        "failed": 0,
        "skipped": 0,
        "variants": 8,
        "encoder_calls": 4,
        "cache_hits": 0,
    }
    assert body["encoder_calls"] == 4 and body["cache_hits"] == 0
    assert {"decode", "embed", "predict", "edit", "encode", "store", "wall"} <= set(body["timings_ms"])
    assert body["segmenter"].startswith("classical:")
    assert body["errors"] == [] and body["error"] == ""
    assert body["duration_ms"] is not None and body["finished_at"]
    # The last event id is the channel's latest event (the UI may add its own after "done").
    from django_eventstream.models import Event

    stored = Event.objects.filter(channel=f"job-{finished_job.id.hex}").exclude(eid=0).order_by("eid")
    assert "done" in [e.type for e in stored]
    assert body["last_event_id"] == f"job-{finished_job.id.hex}:{stored.last().eid}"


def test_history_lists_the_users_jobs_newest_first_and_paginated(alice, alice_api, photo_dataset, held_jobs):
    from datasets.jobs.services import job_create

    add_templates(photo_dataset, 1)
    other_dataset = DatasetFactory(owner=alice)
    add_templates(other_dataset, 1)
    jobs = [job_create(dataset=photo_dataset, owner=alice) for _ in range(3)]
    jobs.append(job_create(dataset=other_dataset, owner=alice))
    body = alice_api.get("/api/jobs/").json()
    assert body["count"] == 4 and [j["id"] for j in body["results"]] == [j.id.hex for j in reversed(jobs)]
    per_dataset = alice_api.get(f"/api/datasets/{photo_dataset.id.hex}/jobs/").json()
    assert [j["id"] for j in per_dataset["results"]] == [j.id.hex for j in reversed(jobs[:3])]
    page = alice_api.get("/api/jobs/?page=2").status_code
    assert page == 404  # 4 jobs fit one page of 50


def test_items_list_per_image_status_and_errors(alice_api, alice, photo_dataset, run_jobs):
    add_templates(photo_dataset, 1)
    default_storage.delete(photo_dataset.images.get(filename="coffee.png").file.name)
    with run_jobs():
        job_id = alice_api.post(f"/api/datasets/{photo_dataset.id.hex}/jobs/", {}, format="json").json()["id"]
    items = alice_api.get(f"/api/jobs/{job_id}/items/").json()["results"]
    assert [(i["index"], i["filename"], i["status"]) for i in items] == [
        (0, "astronaut.png", "succeeded"),
        (1, "coffee.png", "failed"),
        (2, "camera.png", "succeeded"),
        (3, "chelsea.png", "succeeded"),
    ]
    assert items[1]["error"] == "the stored file is missing" and items[1]["attempts"] == 1
    detail = alice_api.get(f"/api/jobs/{job_id}/").json()
    assert detail["errors"] == [
        {
            "index": 1,
            "image_id": items[1]["image_id"],
            "filename": "coffee.png",
            "error": "the stored file is missing",
        }
    ]


def test_variants_are_listed_and_filtered_by_image_and_template(alice_api, finished_job):
    url = f"/api/jobs/{finished_job.id.hex}/variants/"
    everything = alice_api.get(url).json()
    assert everything["count"] == 8
    image_id = everything["results"][0]["image_id"]
    template_id = everything["results"][0]["template_key"]
    by_image = alice_api.get(url, {"image": image_id}).json()["results"]
    assert len(by_image) == 2 and {v["image_id"] for v in by_image} == {image_id}
    by_template = alice_api.get(url, {"template": template_id}).json()["results"]
    assert len(by_template) == 4 and {v["template_id"] for v in by_template} == {template_id}
    assert alice_api.get(url, {"template": "stack"}).json()["count"] == 0
    assert alice_api.get(url, {"image": "nope"}).json()["error"] == "invalid_filter"


def test_variant_file_and_mask_downloads_are_the_stored_bytes(alice_api, finished_job):
    variant = finished_job.variants.select_related("image").first()
    response = alice_api.get(f"/api/variants/{variant.id.hex}/file/")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    data = b"".join(response.streaming_content)
    with variant.file.open("rb") as handle:
        assert data == handle.read()
    assert int(response["Content-Length"]) == len(data)
    assert response["Content-Disposition"].startswith("inline; filename=")
    mask = alice_api.get(f"/api/variants/{variant.id.hex}/mask/")
    assert mask["Content-Type"] == "image/png"
    with variant.mask_file.open("rb") as handle:
        assert b"".join(mask.streaming_content) == handle.read()


def test_cancel_and_retry_over_the_api(alice, alice_api, photo_dataset, held_jobs, run_jobs):
    from datasets.jobs.services import job_create

    add_templates(photo_dataset, 1)
    job = job_create(dataset=photo_dataset, owner=alice)
    response = alice_api.post(f"/api/jobs/{job.id.hex}/cancel/")
    assert response.status_code == 202 and response.json()["status"] == "canceled"
    again = alice_api.post(f"/api/jobs/{job.id.hex}/cancel/")
    assert again.status_code == 409 and again.json()["error"] == "job_not_cancelable"
    with run_jobs():
        retried = alice_api.post(f"/api/jobs/{job.id.hex}/retry/")
    assert retried.status_code == 202
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and held_jobs == [job.id]


def test_retry_of_a_fully_succeeded_job_is_refused(alice_api, finished_job):
    response = alice_api.post(f"/api/jobs/{finished_job.id.hex}/retry/")
    assert response.status_code == 409 and response.json()["error"] == "nothing_to_retry"


def test_bob_cannot_see_or_touch_alices_jobs(bob_api, finished_job, photo_dataset):
    job = finished_job.id.hex
    variant = finished_job.variants.first().id.hex
    for url in (
        f"/api/jobs/{job}/",
        f"/api/jobs/{job}/items/",
        f"/api/jobs/{job}/variants/",
        f"/api/jobs/{job}/download/",
        f"/api/jobs/{job}/events/",
        f"/api/variants/{variant}/file/",
        f"/api/variants/{variant}/mask/",
        f"/api/datasets/{photo_dataset.id.hex}/jobs/",
    ):
        response = bob_api.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"] == "not_found", url
    for url in (
        f"/api/jobs/{job}/cancel/",
        f"/api/jobs/{job}/retry/",
        f"/api/datasets/{photo_dataset.id.hex}/jobs/",
    ):
        assert bob_api.post(url, {}, format="json").status_code == 404, url
    assert bob_api.get("/api/jobs/").json()["count"] == 0


def test_anonymous_clients_get_401(client, finished_job):
    for url in (
        f"/api/jobs/{finished_job.id.hex}/",
        "/api/jobs/",
        f"/api/jobs/{finished_job.id.hex}/download/",
    ):
        response = client.get(url)
        assert response.status_code == 401 and response.json()["error"] == "not_authenticated"


def test_malformed_ids_are_404(alice_api):
    assert alice_api.get("/api/jobs/not-a-uuid/").status_code == 404
    assert alice_api.get("/api/variants/zzz/file/").status_code == 404


def test_session_clients_work_too(alice_client, finished_job):
    response = alice_client.get(f"/api/jobs/{finished_job.id.hex}/")
    assert response.status_code == 200 and response.json()["status"] == "succeeded"


def test_the_jobs_part_of_the_openapi_schema_is_valid_without_warnings():
    """What ``spectacular --validate --fail-on-warn`` checks, restricted to this API's views."""
    from django.urls import include, path
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    GENERATOR_STATS._warn_cache.clear()
    GENERATOR_STATS._error_cache.clear()
    schema = SchemaGenerator(patterns=[path("api/", include("datasets.jobs.urls"))]).get_schema(public=True)
    validate_schema(schema)
    assert not GENERATOR_STATS, (dict(GENERATOR_STATS._warn_cache), dict(GENERATOR_STATS._error_cache))
    assert "/api/jobs/{job_id}/events/" in schema["paths"]
    assert "application/zip" in str(schema["paths"]["/api/jobs/{job_id}/download/"])


def test_the_counters_of_the_api_are_the_event_contracts():
    from typing import get_type_hints

    from datasets.jobs.events import Counters
    from datasets.jobs.serializers import JobCountersSerializer

    assert list(JobCountersSerializer().fields) == list(get_type_hints(Counters))
