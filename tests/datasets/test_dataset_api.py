"""/api/datasets/: list (own, newest first, counts), create, retrieve, rename, delete with its files."""

from __future__ import annotations

import pytest

from datasets.models import Dataset
from tests.fixtures.factories import (
    DatasetFactory,
    DatasetImageFactory,
    GenerationJobFactory,
    TemplateFactory,
    VariantFactory,
)
from tests.fixtures.uploads import stored_files

pytestmark = pytest.mark.django_db


def detail_url(dataset) -> str:
    return f"/api/datasets/{dataset.id.hex}/"


def test_the_list_holds_only_my_datasets_newest_first_with_counts(alice_api, alice, bob):
    older = DatasetFactory(owner=alice, name="older")
    newer = DatasetFactory(owner=alice, name="newer")
    DatasetFactory(owner=bob, name="bob's")
    DatasetImageFactory.create_batch(2, dataset=older)
    TemplateFactory(dataset=older)
    GenerationJobFactory(dataset=older, status="succeeded")

    response = alice_api.get("/api/datasets/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [row["name"] for row in body["results"]] == ["newer", "older"]
    row = body["results"][1]
    assert row["id"] == older.id.hex
    assert (row["image_count"], row["template_count"], row["job_count"]) == (2, 1, 1)
    assert row["last_job_status"] == "succeeded"
    assert row["images_url"].endswith(f"/api/datasets/{older.id.hex}/images/")
    assert row["templates_url"].endswith(f"/api/datasets/{older.id.hex}/templates/")
    assert body["results"][0]["id"] == newer.id.hex and body["results"][0]["last_job_status"] is None


def test_create_names_a_dataset_owned_by_the_caller(alice_api, alice):
    response = alice_api.post("/api/datasets/", {"name": "  Widgets\u0007 "}, format="json")

    assert response.status_code == 201
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert (dataset.owner, dataset.name) == (alice, "Widgets")
    assert response.json()["image_count"] == 0


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {},
            {
                "error": "validation_error",
                "detail": "Invalid input.",
                "fields": {"name": ["This field is required."]},
            },
        ),
        ({"name": "   "}, {"error": "validation_error"}),
        ({"name": "\u0007\u0008"}, {"error": "invalid_name", "field": "name"}),
        ({"name": "x" * 201}, {"error": "validation_error"}),
    ],
)
def test_create_refuses_a_missing_blank_or_long_name(alice_api, payload, expected):
    response = alice_api.post("/api/datasets/", payload, format="json")

    assert response.status_code == 400
    assert expected.items() <= response.json().items()
    assert Dataset.objects.count() == 0


def test_retrieve_and_rename(alice_api, alice):
    dataset = DatasetFactory(owner=alice, name="before")
    DatasetImageFactory(dataset=dataset)

    renamed = alice_api.patch(detail_url(dataset), {"name": "after"}, format="json")
    fetched = alice_api.get(detail_url(dataset))

    assert renamed.status_code == 200 and renamed.json()["name"] == "after"
    assert fetched.json()["name"] == "after" and fetched.json()["image_count"] == 1
    assert alice_api.put(detail_url(dataset), {"name": "again"}, format="json").json()["name"] == "again"


def test_delete_removes_the_dataset_and_every_file_after_commit(
    alice_api, alice, settings, django_capture_on_commit_callbacks
):
    dataset = DatasetFactory(owner=alice)
    image = DatasetImageFactory(dataset=dataset)
    TemplateFactory(dataset=dataset, reference_image=image)
    variant = VariantFactory(job=GenerationJobFactory(dataset=dataset), image=image)
    variant.mask_file.save("mask.png", variant.file, save=True)
    keep = DatasetImageFactory()  # someone else's file stays
    assert len(stored_files(settings)) == 6

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.delete(detail_url(dataset))

    assert response.status_code == 204
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert stored_files(settings) == sorted([keep.file.name, keep.thumbnail.name])


def test_bob_gets_404_for_every_dataset_endpoint_of_alice(bob_api, alice):
    dataset = DatasetFactory(owner=alice, name="mine")
    url = detail_url(dataset)

    responses = [
        bob_api.get(url),
        bob_api.patch(url, {"name": "stolen"}, format="json"),
        bob_api.put(url, {"name": "stolen"}, format="json"),
        bob_api.delete(url),
        bob_api.get(f"{url}images/"),
        bob_api.post(f"{url}preview/", {}, format="json"),
        bob_api.post(f"{url}prewarm/", {}, format="json"),
        bob_api.get(f"{url}templates/"),
        bob_api.post(f"{url}templates/", {"points": [{"x_norm": 0.5, "y_norm": 0.5}]}, format="json"),
    ]

    assert [r.status_code for r in responses] == [404] * len(responses)
    assert {r.json()["error"] for r in responses} == {"not_found"}
    dataset.refresh_from_db()
    assert dataset.name == "mine"
    assert bob_api.get("/api/datasets/").json()["count"] == 0


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "0" * 32, "1234"])
def test_malformed_or_unknown_ids_are_json_404s(alice_api, bad_id):
    response = alice_api.get(f"/api/datasets/{bad_id}/")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
