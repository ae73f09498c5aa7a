"""/api/images/{id}/ and the dataset's image list: read, class, delete, authenticated file downloads."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from rest_framework.pagination import PageNumberPagination

from datasets.models import DatasetImage
from tests.fixtures.factories import DatasetImageFactory
from tests.fixtures.uploads import images_url, post_upload, stored_files

pytestmark = pytest.mark.django_db


def image_url(image, suffix: str = "") -> str:
    return f"/api/images/{image.id.hex}/{suffix}"


@pytest.fixture
def uploaded(alice_api, alice_dataset, photo_png):
    """astronaut, coffee and camera uploaded through the API (real files, real thumbnails)."""
    files = [(f"{name}.png", photo_png[name]) for name in ("astronaut", "coffee", "camera")]
    response = post_upload(alice_api, alice_dataset, files)
    assert response.status_code == 201
    return {image.filename: image for image in alice_dataset.images.all()}


def test_the_list_is_paginated_in_upload_order(alice_api, alice_dataset, monkeypatch):
    # PageNumberPagination reads PAGE_SIZE once, at import: patch the class, not the setting.
    monkeypatch.setattr(PageNumberPagination, "page_size", 2)
    for position in range(3):
        DatasetImageFactory(dataset=alice_dataset, position=position)

    first = alice_api.get(images_url(alice_dataset)).json()
    second = alice_api.get(first["next"]).json()

    assert first["count"] == 3
    assert [row["position"] for row in first["results"]] == [0, 1]
    assert [row["position"] for row in second["results"]] == [2]
    assert second["next"] is None
    row = first["results"][0]
    assert row["file_url"] == f"http://testserver/api/images/{row['id']}/file/"
    assert row["thumbnail_url"] == f"http://testserver/api/images/{row['id']}/thumbnail/"
    assert "/media" not in str(first)


def test_retrieve_one_image(alice_api, uploaded):
    image = uploaded["coffee.png"]
    body = alice_api.get(image_url(image)).json()

    assert body["id"] == image.id.hex and body["dataset"] == image.dataset_id.hex
    assert (body["width"], body["height"], body["filename"]) == (600, 400, "coffee.png")


def test_the_original_downloads_byte_for_byte(alice_api, alice_client, uploaded, photo_png):
    image = uploaded["astronaut.png"]

    by_token = alice_api.get(image_url(image, "file/"))
    by_session = alice_client.get(image_url(image, "file/"), HTTP_ACCEPT="image/png")
    as_attachment = alice_api.get(image_url(image, "file/") + "?download=1")

    assert by_token.status_code == 200 and by_session.status_code == 200
    assert b"".join(by_token.streaming_content) == photo_png["astronaut"]
    assert b"".join(by_session.streaming_content) == photo_png["astronaut"]
    assert by_token["Content-Type"] == "image/png"
    assert by_token["Content-Disposition"] == 'inline; filename="astronaut.png"'
    assert by_token["ETag"] == f'"{image.sha256}"'
    assert by_token["Cache-Control"] == "private, max-age=86400"
    assert as_attachment["Content-Disposition"] == 'attachment; filename="astronaut.png"'


def test_the_thumbnail_is_a_png_with_longest_side_160(alice_api, uploaded):
    response = alice_api.get(image_url(uploaded["coffee.png"], "thumbnail/"))

    assert response["Content-Type"] == "image/png"
    thumbnail = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    assert thumbnail.size == (160, 107)


def test_set_the_class(alice_api, uploaded):
    image = uploaded["camera.png"]

    passed = alice_api.patch(image_url(image), {"image_class": "pass"}, format="json")
    cleared = alice_api.patch(image_url(image), {"image_class": ""}, format="json")
    refused = alice_api.patch(image_url(image), {"image_class": "maybe"}, format="json")

    assert passed.status_code == 200 and passed.json()["image_class"] == "pass"
    assert cleared.json()["image_class"] == ""
    assert refused.status_code == 400
    assert refused.json()["error"] == "validation_error" and "image_class" in refused.json()["fields"]
    image.refresh_from_db()
    assert image.image_class == ""


def test_delete_removes_the_row_and_its_files_after_commit(
    alice_api, uploaded, settings, django_capture_on_commit_callbacks
):
    image = uploaded["camera.png"]
    names = {image.file.name, image.thumbnail.name}

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.delete(image_url(image))

    assert response.status_code == 204
    assert not DatasetImage.objects.filter(pk=image.pk).exists()
    assert not names & set(stored_files(settings))
    assert len(stored_files(settings)) == 4  # the other two images and their thumbnails


def test_put_is_not_offered(alice_api, uploaded):
    assert alice_api.put(image_url(uploaded["camera.png"]), {}, format="json").status_code == 405


def test_bob_gets_404_for_every_image_endpoint_of_alice(bob_api, bob_client, uploaded):
    image = uploaded["astronaut.png"]

    responses = [
        bob_api.get(image_url(image)),
        bob_api.patch(image_url(image), {"image_class": "fail"}, format="json"),
        bob_api.delete(image_url(image)),
        bob_api.get(image_url(image, "file/")),
        bob_api.get(image_url(image, "thumbnail/")),
        bob_client.get(image_url(image, "file/")),
        bob_client.get(image_url(image, "thumbnail/")),
        bob_api.post(
            image_url(image, "segment/"), {"points": [{"x_norm": 0.5, "y_norm": 0.5}]}, format="json"
        ),
    ]

    assert [r.status_code for r in responses] == [404] * len(responses)
    assert {r.json()["error"] for r in responses} == {"not_found"}
    image.refresh_from_db()
    assert image.image_class == ""


def test_anonymous_file_downloads_are_refused(client, uploaded):
    image = uploaded["astronaut.png"]
    assert client.get(image_url(image, "file/")).status_code == 401
    assert client.get(image_url(image, "thumbnail/")).status_code == 401
