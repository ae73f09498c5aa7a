"""Segment preview, edit preview and prewarm: real photos, both backends, the embedding cache, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from datasets.segmentation import app_segmenter
from imaging.codecs import b64decode, decode_mask_png
from tests.fixtures.factories import DatasetFactory, TemplateFactory
from tests.fixtures.uploads import post_upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def photos_uploaded(alice_api, alice_dataset, photo_png):
    """coffee (a cup in the middle) and astronaut, uploaded through the API."""
    files = [("coffee.png", photo_png["coffee"]), ("astronaut.png", photo_png["astronaut"])]
    assert post_upload(alice_api, alice_dataset, files).status_code == 201
    return {image.filename: image for image in alice_dataset.images.all()}


def segment(api, image, points, **extra):
    return api.post(f"/api/images/{image.id.hex}/segment/", {"points": points, **extra}, format="json")


def mask_of(candidate: dict, width: int, height: int) -> np.ndarray:
    return decode_mask_png(b64decode(candidate["mask_png"]), expected_size=(width, height))


def assert_well_formed(body: dict, width: int, height: int) -> None:
    assert (body["width"], body["height"]) == (width, height)
    candidates = body["candidates"]
    assert 1 <= len(candidates) <= 3
    assert [c["rank"] for c in candidates] == list(range(1, len(candidates) + 1))
    scores = [c["score"] for c in candidates]
    assert scores == sorted(scores, reverse=True)
    for candidate in candidates:
        mask = mask_of(candidate, width, height)
        assert candidate["area"] == int(mask.sum())
        if candidate["area"]:
            ys, xs = np.nonzero(mask)
            assert candidate["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        else:
            assert candidate["bbox"] is None


# --- segment preview --------------------------------------------------------------------------------------


def test_classical_masks_on_a_real_photo_contain_the_positive_point(alice_api, photos_uploaded):
    coffee = photos_uploaded["coffee.png"]  # 600 x 400; the cup's rim is around (0.45, 0.45)
    response = segment(alice_api, coffee, [{"x_norm": 0.45, "y_norm": 0.45, "positive": True}])

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["backend"] == "classical" and body["image_id"] == coffee.id.hex
    assert_well_formed(body, 600, 400)
    x, y = round(0.45 * 599), round(0.45 * 399)
    for candidate in body["candidates"]:
        assert mask_of(candidate, 600, 400)[y, x], "the mask must contain the positive point"
        assert 0 < candidate["area"] < 600 * 400 // 2  # an object, not the whole picture


def test_pixel_units_address_the_same_point(alice_api, photos_uploaded):
    coffee = photos_uploaded["coffee.png"]
    normalised = segment(alice_api, coffee, [{"x_norm": 0.45, "y_norm": 0.45}]).json()
    pixels = segment(alice_api, coffee, [{"x": round(0.45 * 599), "y": round(0.45 * 399)}], units="px").json()

    assert [c["mask_png"] for c in pixels["candidates"]] == [c["mask_png"] for c in normalised["candidates"]]


def test_a_second_classical_preview_reuses_the_embedding(alice_api, photos_uploaded):
    astronaut = photos_uploaded["astronaut.png"]
    first = segment(alice_api, astronaut, [{"x_norm": 0.45, "y_norm": 0.3}]).json()
    calls = app_segmenter().encode_calls
    second = segment(
        alice_api,
        astronaut,
        [{"x_norm": 0.45, "y_norm": 0.3}, {"x_norm": 0.1, "y_norm": 0.9, "positive": False}],
    ).json()

    assert (first["cached"], second["cached"]) == (False, True)
    assert app_segmenter().encode_calls == calls


def test_tiny_sam_previews_come_from_the_cache_after_the_first(alice_api, photos_uploaded, use_tiny_sam):
    astronaut = photos_uploaded["astronaut.png"]
    segmenter = app_segmenter()
    assert segmenter.backend == "sam"

    first = segment(alice_api, astronaut, [{"x_norm": 0.5, "y_norm": 0.4}])
    assert segmenter.encode_calls == 1
    second = segment(
        alice_api,
        astronaut,
        [{"x_norm": 0.2, "y_norm": 0.7}, {"x_norm": 0.9, "y_norm": 0.9, "positive": False}],
    )

    assert first.status_code == second.status_code == 200
    assert segmenter.encode_calls == 1, "the second preview must not run the encoder"
    assert (first.json()["cached"], second.json()["cached"]) == (False, True)
    assert first.json()["backend"] == "sam"
    # Random weights give arbitrary masks: only their shape, bboxes and order are meaningful.
    assert_well_formed(first.json(), 512, 512)
    assert_well_formed(second.json(), 512, 512)


def test_the_disk_cache_serves_another_process(alice_api, photos_uploaded, use_tiny_sam):
    from datasets.services.previews import recent_embeddings

    astronaut = photos_uploaded["astronaut.png"]
    segment(alice_api, astronaut, [{"x_norm": 0.5, "y_norm": 0.4}])
    recent_embeddings.clear()  # as if this were another worker: only the disk cache is shared

    again = segment(alice_api, astronaut, [{"x_norm": 0.5, "y_norm": 0.4}])

    assert again.json()["cached"] is True and app_segmenter().encode_calls == 1


def test_a_missing_sam_model_is_a_503(alice_api, photos_uploaded, settings):
    settings.SAM_BACKEND = "sam"  # and no checkpoint anywhere
    response = segment(alice_api, photos_uploaded["coffee.png"], [{"x_norm": 0.5, "y_norm": 0.5}])

    assert response.status_code == 503
    assert response.json()["error"] == "sam_model_not_loaded"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"points": []}, {"error": "no_points", "field": "points"}),
        ({}, {"error": "no_points", "field": "points"}),
        ({"points": "0.5,0.5"}, {"error": "invalid_points", "field": "points"}),
        (
            {"points": [{"x_norm": 0.5, "y_norm": 0.5}, {"x_norm": 1.5, "y_norm": 0.5}]},
            {
                "error": "invalid_points",
                "index": 1,
                "detail": "point 1: x_norm must be between 0 and 1, got 1.5",
            },
        ),
        ({"points": [{"x_norm": "left", "y_norm": 0.5}]}, {"error": "invalid_points", "index": 0}),
        (
            {"points": [{"x_norm": 0.5}]},
            {"error": "invalid_points", "index": 0, "detail": "point 0: y_norm is required"},
        ),
        ({"points": [{"x_norm": 0.5, "y_norm": 0.5, "positive": False}]}, {"error": "invalid_points"}),
        ({"points": [{"x": 600, "y": 10}], "units": "px"}, {"error": "invalid_points", "index": 0}),
        ({"points": [{"x_norm": 0.5, "y_norm": 0.5}], "units": "mm"}, {"error": "validation_error"}),
        ({"points": [[0.5, 0.5]]}, {"error": "invalid_points", "index": 0}),
    ],
)
def test_bad_points_are_400_with_the_offending_index(alice_api, photos_uploaded, payload, expected):
    coffee = photos_uploaded["coffee.png"]
    response = alice_api.post(f"/api/images/{coffee.id.hex}/segment/", payload, format="json")

    assert response.status_code == 400
    assert expected.items() <= response.json().items(), response.json()


# --- edit preview -----------------------------------------------------------------------------------------


def preview(api, dataset, **payload):
    return api.post(f"/api/datasets/{dataset.id.hex}/preview/", payload, format="json")


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_the_edit_preview_brightens_the_masked_object_only(alice_api, alice_dataset, photos_uploaded, photos):
    coffee = photos_uploaded["coffee.png"]
    template = TemplateFactory(
        dataset=alice_dataset, points=[{"x_norm": 0.45, "y_norm": 0.45, "positive": True}]
    )

    response = preview(
        alice_api,
        alice_dataset,
        image_id=coffee.id.hex,
        templates=[{"id": template.id.hex, "edits": {"brightness": 0.4}}],
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["applied"] is True and body["template_ids"] == [template.id.hex]
    assert body["template_names"] == [template.name] and (body["width"], body["height"]) == (600, 400)
    variant = png_pixels(b64decode(body["variant_png"]))
    changed = np.any(variant != photos["coffee"], axis=2)
    assert 0 < changed.sum() == body["area"] or 0 < changed.sum() <= body["area"]
    assert changed[round(0.45 * 399), round(0.45 * 599)]  # the clicked object got brighter
    assert (variant[changed].astype(int) >= photos["coffee"][changed].astype(int)).all()


def test_neutral_edits_give_back_the_original_pixels(alice_api, alice_dataset, photos_uploaded, photos):
    template = TemplateFactory(dataset=alice_dataset, default_edits={})
    body = preview(alice_api, alice_dataset, image_id=photos_uploaded["astronaut.png"].id.hex).json()

    assert body["applied"] is True and body["template_ids"] == [template.id.hex]
    assert np.array_equal(png_pixels(b64decode(body["variant_png"])), photos["astronaut"])


def test_the_edit_preview_as_a_png_response(alice_api, alice_dataset, photos_uploaded):
    TemplateFactory(dataset=alice_dataset, points=[{"x_norm": 0.45, "y_norm": 0.45, "positive": True}])
    coffee = photos_uploaded["coffee.png"]

    as_json = preview(alice_api, alice_dataset, image_id=coffee.id.hex).json()
    by_flag = preview(alice_api, alice_dataset, image_id=coffee.id.hex, output="image")
    by_query = alice_api.post(
        f"/api/datasets/{alice_dataset.id.hex}/preview/?as=image",
        {"image_id": coffee.id.hex},
        format="json",
        HTTP_ACCEPT="image/png",
    )

    for response in (by_flag, by_query):
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert response["X-Variant-Applied"] == "true"
        assert np.array_equal(png_pixels(response.content), png_pixels(b64decode(as_json["variant_png"])))


def test_stacking_follows_the_save_order_and_each_takes_the_first(alice_api, alice_dataset, photos_uploaded):
    first = TemplateFactory(
        dataset=alice_dataset, points=[{"x_norm": 0.45, "y_norm": 0.45, "positive": True}]
    )
    second = TemplateFactory(dataset=alice_dataset, points=[{"x_norm": 0.1, "y_norm": 0.1, "positive": True}])
    coffee = photos_uploaded["coffee.png"]
    items = [{"id": second.id.hex}, {"id": first.id.hex, "edits": {"contrast": 0.3}}]

    stacked = preview(alice_api, alice_dataset, image_id=coffee.id.hex, templates=items).json()
    each = preview(alice_api, alice_dataset, image_id=coffee.id.hex, templates=items, compose="each").json()

    # EDITS.md: stacked templates apply in save order, whatever order the request lists them in.
    assert stacked["template_ids"] == [first.id.hex, second.id.hex]
    assert each["template_ids"] == [first.id.hex]


def test_a_template_of_another_class_does_not_apply(alice_api, alice_dataset, photos_uploaded, photos):
    coffee = photos_uploaded["coffee.png"]
    coffee.image_class = "pass"
    coffee.save()
    TemplateFactory(dataset=alice_dataset, image_class="fail")

    body = preview(alice_api, alice_dataset, image_id=coffee.id.hex).json()

    assert body["applied"] is False and body["template_ids"] == []
    assert np.array_equal(png_pixels(b64decode(body["variant_png"])), photos["coffee"])


def test_without_image_id_the_first_image_is_previewed(alice_api, alice_dataset, photos_uploaded):
    TemplateFactory(dataset=alice_dataset)
    assert preview(alice_api, alice_dataset).json()["filename"] == "coffee.png"


def test_edit_preview_input_errors(alice_api, alice_dataset, photos_uploaded, bob):
    template = TemplateFactory(dataset=alice_dataset)
    bobs_template = TemplateFactory(dataset=DatasetFactory(owner=bob))
    coffee = photos_uploaded["coffee.png"].id.hex

    out_of_range = preview(
        alice_api,
        alice_dataset,
        image_id=coffee,
        templates=[{"id": template.id.hex}, {"id": template.id.hex, "edits": {"brightness": 1.5}}],
    )
    unknown_field = preview(
        alice_api, alice_dataset, image_id=coffee, templates=[{"id": template.id.hex, "edits": {"glow": 1}}]
    )
    foreign = preview(alice_api, alice_dataset, image_id=coffee, templates=[{"id": bobs_template.id.hex}])
    not_a_list = preview(alice_api, alice_dataset, image_id=coffee, templates={"id": template.id.hex})
    empty = preview(alice_api, alice_dataset, image_id=coffee, templates=[])
    bad_compose = preview(alice_api, alice_dataset, image_id=coffee, compose="mosaic")

    assert out_of_range.status_code == 400
    assert {
        "error": "invalid_edits",
        "field": "brightness",
        "index": 1,
    }.items() <= out_of_range.json().items()
    assert {"error": "invalid_edits", "field": "glow", "index": 0}.items() <= unknown_field.json().items()
    assert {"error": "invalid_template", "field": "templates", "index": 0}.items() <= foreign.json().items()
    assert not_a_list.json()["error"] == "invalid_template"
    assert empty.json()["error"] == "no_templates"
    assert bad_compose.json()["error"] == "validation_error" and "compose" in bad_compose.json()["fields"]


def test_edit_preview_of_a_foreign_image_is_404_and_an_empty_dataset_is_400(alice_api, alice_dataset, bob):
    from tests.fixtures.factories import DatasetImageFactory

    TemplateFactory(dataset=alice_dataset)
    bobs_image = DatasetImageFactory(dataset=DatasetFactory(owner=bob))

    assert preview(alice_api, alice_dataset).json()["error"] == "no_images"
    foreign = preview(alice_api, alice_dataset, image_id=bobs_image.id.hex)
    assert (foreign.status_code, foreign.json()["error"]) == (404, "not_found")


# --- prewarm ----------------------------------------------------------------------------------------------


def prewarm(api, dataset, **payload):
    return api.post(f"/api/datasets/{dataset.id.hex}/prewarm/", payload, format="json")


def test_prewarm_encodes_each_image_once_then_previews_are_cached(
    alice_api, alice_dataset, photos_uploaded, use_tiny_sam
):
    first = prewarm(alice_api, alice_dataset)
    again = prewarm(alice_api, alice_dataset)
    coffee = photos_uploaded["coffee.png"]
    segmented = segment(alice_api, coffee, [{"x_norm": 0.5, "y_norm": 0.5}])

    assert first.status_code == 200
    assert {k: first.json()[k] for k in ("total", "computed", "skipped", "failed")} == {
        "total": 2,
        "computed": 2,
        "skipped": 0,
        "failed": 0,
    }
    assert [row["filename"] for row in first.json()["images"]] == ["coffee.png", "astronaut.png"]
    assert [row["computed"] for row in first.json()["images"]] == [True, True]
    assert {k: again.json()[k] for k in ("computed", "skipped")} == {"computed": 0, "skipped": 2}
    assert app_segmenter().encode_calls == 2
    assert segmented.json()["cached"] is True


def test_prewarm_of_chosen_images(alice_api, alice_dataset, photos_uploaded, use_tiny_sam, bob):
    from tests.fixtures.factories import DatasetImageFactory

    coffee = photos_uploaded["coffee.png"]
    chosen = prewarm(alice_api, alice_dataset, image_ids=[coffee.id.hex])
    foreign = prewarm(
        alice_api,
        alice_dataset,
        image_ids=[coffee.id.hex, DatasetImageFactory(dataset=DatasetFactory(owner=bob)).id.hex],
    )

    assert [row["image_id"] for row in chosen.json()["images"]] == [coffee.id.hex]
    assert foreign.status_code == 400
    assert {"error": "invalid_image_id", "field": "image_ids", "index": 1}.items() <= foreign.json().items()


def test_prewarm_with_the_classical_backend_skips_everything(alice_api, alice_dataset, photos_uploaded):
    body = prewarm(alice_api, alice_dataset).json()

    assert body["backend"] == "classical"
    assert (body["total"], body["computed"], body["skipped"]) == (2, 0, 2)
    assert app_segmenter().encode_calls == 0
