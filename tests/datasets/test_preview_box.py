"""Segment previews with a box prompt: the masks are the segmenter's for that box; bad boxes are 400."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.image_io import decode_stored_image
from datasets.segmentation import app_segmenter, embedding_for
from imaging.codecs import b64decode, decode_mask_png
from imaging.points import denormalize_box
from tests.fixtures.uploads import post_upload

pytestmark = pytest.mark.django_db

BOX = [0.25, 0.2, 0.75, 0.8]


@pytest.fixture
def astronaut(alice_api, alice_dataset, photo_png):
    assert (
        post_upload(alice_api, alice_dataset, [("astronaut.png", photo_png["astronaut"])]).status_code == 201
    )
    return alice_dataset.images.get()


def segment(api, image, **payload):
    return api.post(f"/api/images/{image.id.hex}/segment/", payload, format="json")


def test_a_box_alone_previews_the_segmenters_box_masks(alice_api, astronaut, use_tiny_sam):
    response = segment(alice_api, astronaut, box=BOX)

    assert response.status_code == 200, response.content
    segmenter = app_segmenter(astronaut.dataset)
    decoded = decode_stored_image(astronaut.file)
    embedding, _ = embedding_for(sha256=astronaut.sha256, rgb=decoded.rgb, segmenter=segmenter)
    expected = segmenter.predict(
        embedding, None, None, box=denormalize_box(BOX, decoded.width, decoded.height), multimask=True
    )
    best = max(expected, key=lambda c: c.score)
    first = response.json()["candidates"][0]
    mask = decode_mask_png(b64decode(first["mask_png"]), expected_size=(decoded.width, decoded.height))
    assert np.array_equal(mask, best.mask) and first["score"] == pytest.approx(best.score)


def test_a_box_changes_the_point_preview(alice_api, astronaut, use_tiny_sam):
    point = [{"x_norm": 0.5, "y_norm": 0.4}]
    plain = segment(alice_api, astronaut, points=point).json()["candidates"]
    boxed = segment(alice_api, astronaut, points=point, box=[0.45, 0.35, 0.55, 0.45]).json()["candidates"]
    assert [c["mask_png"] for c in plain] != [c["mask_png"] for c in boxed]


@pytest.mark.parametrize("box", [[0.1, 0.2], [0, 0, 0, 0.5], [0.1, 0.1, 1.5, 0.5], "all"])
def test_a_bad_box_is_400_naming_the_field(alice_api, astronaut, box):
    response = segment(alice_api, astronaut, points=[{"x_norm": 0.5, "y_norm": 0.4}], box=box)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_box" and response.json()["field"] == "box"


def test_neither_points_nor_box_is_no_points(alice_api, astronaut):
    response = segment(alice_api, astronaut)
    assert response.status_code == 400 and response.json()["error"] == "no_points"


def test_bobs_image_is_404_with_a_box(bob_api, astronaut):
    assert segment(bob_api, astronaut, box=BOX).status_code == 404
