"""Bounded work: each limit is configurable and answered with a JSON error that names it."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from templates_app.models import Template
from tests.fixtures.factories import DatasetFactory, DatasetImageFactory, TemplateFactory
from tests.fixtures.images import png_bytes

pytestmark = pytest.mark.django_db

POINT = {"x_norm": 0.5, "y_norm": 0.5, "positive": True}


@pytest.fixture
def image(alice):
    return DatasetImageFactory(dataset=DatasetFactory(owner=alice))


def _assert_names(response, code: str, limit: str, status: int = 400):
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert body["error"] == code and body["limit"] == limit and limit in body["detail"]
    return body


def test_points_per_prompt_are_limited_on_every_interface(alice_api, alice_client, image, settings):
    settings.MAX_POINTS_PER_PROMPT = 4
    points = [POINT] * 5

    rest = alice_api.post(f"/api/images/{image.id.hex}/segment/", {"points": points}, format="json")
    seed = alice_api.post(
        "/sam/dataset/point_preview",
        {"dataset_id": image.dataset.id.hex, "image_id": image.id.hex, "points": points},
        format="json",
    )
    page = alice_client.post(
        f"/datasets/{image.dataset.id.hex}/images/{image.id.hex}/segment/",
        {"points": points},
        content_type="application/json",
    )
    template = alice_api.post(
        f"/api/datasets/{image.dataset.id.hex}/templates/", {"points": points}, format="json"
    )

    assert _assert_names(rest, "too_many_points", "MAX_POINTS_PER_PROMPT")["max"] == 4
    _assert_names(seed, "too_many_points", "MAX_POINTS_PER_PROMPT")
    _assert_names(page, "too_many_points", "MAX_POINTS_PER_PROMPT")
    _assert_names(template, "too_many_points", "MAX_POINTS_PER_PROMPT")
    assert not Template.objects.exists()
    ok = alice_api.post(f"/api/images/{image.id.hex}/segment/", {"points": [POINT] * 4}, format="json")
    assert ok.status_code == 200 and len(ok.json()["candidates"]) == 3


def test_legacy_points_accumulate_into_one_bounded_prompt(alice_api, settings):
    settings.MAX_POINTS_PER_PROMPT = 3
    image_id = alice_api.post(
        "/sam/init", {"image": SimpleUploadedFile("a.png", png_bytes(64, 48))}, format="multipart"
    ).json()["image_id"]
    pixel = {"x": 30, "y": 20, "positive": True}

    first = alice_api.post("/sam/segment", {"image_id": image_id, "points": [pixel] * 2}, format="json")
    over = alice_api.post("/sam/segment", {"image_id": image_id, "points": [pixel] * 2}, format="json")
    restart = alice_api.post(
        "/sam/segment", {"image_id": image_id, "points": [pixel], "accumulate": False}, format="json"
    )

    assert first.status_code == 200
    _assert_names(over, "too_many_points", "MAX_POINTS_PER_PROMPT")
    assert restart.status_code == 200 and restart.json()["point_summary"]["total"] == 1


def test_templates_per_dataset_are_limited(alice_api, image, settings):
    settings.MAX_TEMPLATES_PER_DATASET = 2
    url = f"/api/datasets/{image.dataset.id.hex}/templates/"
    statuses = [alice_api.post(url, {"points": [POINT]}, format="json").status_code for _ in range(2)]

    over = alice_api.post(url, {"points": [POINT]}, format="json")
    seed = alice_api.post(
        "/sam/dataset/template/save", {"dataset_id": image.dataset.id.hex, "points": [POINT]}, format="json"
    )

    assert statuses == [201, 201]
    assert _assert_names(over, "max_templates_exceeded", "MAX_TEMPLATES_PER_DATASET")["max"] == 2
    _assert_names(seed, "max_templates_exceeded", "MAX_TEMPLATES_PER_DATASET")
    assert Template.objects.filter(dataset=image.dataset).count() == 2


def test_template_references_per_preview_are_limited(alice_api, image, settings):
    settings.MAX_TEMPLATES_PER_PREVIEW = 3
    template = TemplateFactory(dataset=image.dataset)
    refs = [{"id": template.id.hex}] * 4  # the same template 4 times: 4 renders before the limit

    rest = alice_api.post(
        f"/api/datasets/{image.dataset.id.hex}/preview/", {"templates": refs}, format="json"
    )
    seed = alice_api.post(
        "/sam/dataset/template/preview",
        {"dataset_id": image.dataset.id.hex, "templates": [{"template_id": template.id.hex}] * 4},
        format="json",
    )

    _assert_names(rest, "too_many_templates", "MAX_TEMPLATES_PER_PREVIEW")
    _assert_names(seed, "too_many_templates", "MAX_TEMPLATES_PER_PREVIEW")
    ok = alice_api.post(
        f"/api/datasets/{image.dataset.id.hex}/preview/", {"templates": refs[:3]}, format="json"
    )
    assert ok.status_code == 200 and ok.json()["applied"] is True


def test_decode_mask_png_checks_the_header_size_before_decoding():
    import numpy as np

    from imaging.codecs import decode_mask_png, encode_mask_png
    from imaging.errors import ImageDecodeError

    whole = encode_mask_png(np.ones((300, 400), dtype=bool))
    truncated = whole[: len(whole) // 2]  # a valid header, pixel data cut short

    with pytest.raises(ImageDecodeError, match="does not match the image size 64x48"):
        decode_mask_png(truncated, expected_size=(64, 48))
