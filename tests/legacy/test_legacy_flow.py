"""The deprecated single-image flow and the batch endpoints, driven like the old README's curl examples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from legacy.models import Component, LegacySession
from tests.fixtures.seed_api import (
    PREFIXES,
    b64_mask,
    b64_rgb,
    changed_pixels,
    parse_sse,
    post_json,
    read_stream,
    upload,
)

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_the_single_image_flow(alice, alice_api, photo_files, originals, prefix):
    # 1. init (curl -F "image=@sample.jpg")
    response = alice_api.post(f"{prefix}/init", {"image": upload("sample.png", photo_files["chelsea.png"])})
    assert response.status_code == 200, response.content
    init = response.json()
    image_id = init["image_id"]
    original = originals["chelsea.png"]
    height, width = original.shape[:2]
    assert (init["width"], init["height"]) == (width, height)
    assert LegacySession.objects.get(pk=image_id).owner == alice

    # 2. a first positive point, in pixels
    cx, cy = width // 2, int(height * 0.6)
    response = post_json(
        alice_api,
        f"{prefix}/segment",
        {"image_id": image_id, "points": [{"x": cx, "y": cy, "positive": True}]},
    )
    assert response.status_code == 200, response.content
    segment = response.json()
    candidates = segment["candidates"]
    assert 1 <= len(candidates) <= 3 and segment["image_id"] == image_id
    assert [c["rank"] for c in candidates] == list(range(1, len(candidates) + 1))
    assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
    for candidate in candidates:
        mask = b64_mask(candidate["mask_png"])
        assert mask.shape == (height, width) and candidate["area"] == int(mask.sum())
        ys, xs = np.nonzero(mask)
        assert candidate["bbox"] == [xs.min(), ys.min(), xs.max(), ys.max()]
    assert b64_mask(candidates[0]["mask_png"])[cy, cx]
    assert segment["points"] == [{"x": cx, "y": cy, "positive": True}]
    assert segment["point_summary"] == {"total": 1, "positive": 1, "negative": 0}

    # accumulate (default): a negative point adds to the first; top_k trims the candidates
    segment = post_json(
        alice_api,
        f"{prefix}/segment",
        {"image_id": image_id, "points": [{"x": 2, "y": 2, "positive": False}], "top_k": 1},
    ).json()
    assert len(segment["candidates"]) == 1
    assert segment["point_summary"] == {"total": 2, "positive": 1, "negative": 1}
    # accumulate false replaces them
    segment = post_json(
        alice_api,
        f"{prefix}/segment",
        {"image_id": image_id, "points": [{"x": cx, "y": cy}], "accumulate": False},
    ).json()
    assert segment["point_summary"] == {"total": 1, "positive": 1, "negative": 0}
    assert LegacySession.objects.get(pk=image_id).points == [{"x": cx, "y": cy, "positive": True}]
    first = segment["candidates"][0]

    # 3. save the chosen mask, then a second component (a hand-made box)
    saved = post_json(
        alice_api,
        f"{prefix}/save_component",
        {"image_id": image_id, "mask_png": first["mask_png"], "score": first["score"]},
    )
    assert saved.status_code == 200, saved.content
    component = saved.json()["component"]
    assert component["id"] == 1 and component["name"] == "component_1"
    assert component["area"] == first["area"] and component["bbox"] == first["bbox"]
    assert component["score"] == pytest.approx(first["score"])
    box = np.zeros((height, width), dtype=bool)
    box[5:30, 5:40] = True
    from imaging.codecs import b64encode, encode_mask_png

    second = post_json(
        alice_api,
        f"{prefix}/save_component",
        {
            "image_id": image_id,
            "mask_png": "data:image/png;base64," + b64encode(encode_mask_png(box)),
            "name": "cap",
        },
    ).json()["component"]
    assert (second["id"], second["name"], second["area"], second["bbox"]) == (
        2,
        "cap",
        box.sum(),
        [5, 5, 39, 29],
    )

    listed = alice_api.get(f"{prefix}/components", {"image_id": image_id}).json()["components"]
    assert [(c["id"], c["name"]) for c in listed] == [(1, "component_1"), (2, "cap")]

    # 4. apply: each edit inside its own component, in list order
    response = post_json(
        alice_api,
        f"{prefix}/apply",
        {
            "image_id": image_id,
            "edits": [
                {"component_id": 1, "brightness": 0.1, "contrast": 0.15, "sharpen": 0.5},
                {"component_id": 2, "brightness": -0.5},
            ],
            "export_mask": True,
        },
    )
    assert response.status_code == 200, response.content
    applied = response.json()
    variant = b64_rgb(applied["variant_png"])
    component_mask = b64_mask(first["mask_png"])
    union = b64_mask(applied["component_mask_png"])
    assert np.array_equal(union, component_mask | box)
    changed = changed_pixels(original, variant)
    assert changed.any() and not (changed & ~union).any()
    only_box = box & ~component_mask
    assert variant[only_box].astype(int).mean() < original[only_box].astype(int).mean() - 40

    # only the listed component, no mask export requested
    applied = post_json(
        alice_api, f"{prefix}/apply", {"image_id": image_id, "edits": [{"component_id": 2, "saturation": 1}]}
    ).json()
    assert "component_mask_png" not in applied
    changed = changed_pixels(original, b64_rgb(applied["variant_png"]))
    assert changed.any() and not (changed & ~box).any()


def test_apply_on_a_grayscale_photo_without_components_edits_the_whole_image(
    alice_api, photo_files, originals
):
    image_id = alice_api.post("/sam/init", {"image": upload("camera.png", photo_files["camera.png"])}).json()[
        "image_id"
    ]
    applied = post_json(
        alice_api,
        "/sam/apply",
        {"image_id": image_id, "edits": [{"noise": 0.1, "hue": 40, "brightness": 0.1}]},
    ).json()
    variant = b64_rgb(applied["variant_png"])
    assert (variant[..., 0] == variant[..., 1]).all() and (variant[..., 1] == variant[..., 2]).all()
    assert changed_pixels(originals["camera.png"], variant).mean() > 0.5


def test_component_ids_count_per_image(alice_api, photo_files):
    ids = [
        alice_api.post("/sam/init", {"image": upload(name, photo_files[name])}).json()["image_id"]
        for name in ("chelsea.png", "coffee_fail.png")
    ]
    for image_id in ids:
        session = LegacySession.objects.get(pk=image_id)
        mask = np.zeros((session.height, session.width), dtype=bool)
        mask[10:20, 10:20] = True
        from imaging.codecs import b64encode, encode_mask_png

        body = {"image_id": image_id, "mask_png": b64encode(encode_mask_png(mask))}
        assert post_json(alice_api, "/sam/save_component", body).json()["component"]["id"] == 1
        assert post_json(alice_api, "/sam/save_component", body).json()["component"]["id"] == 2
    assert Component.objects.count() == 4


@pytest.mark.parametrize("mode", ["full", "center_point"])
def test_batch_process(alice_api, photo_files, originals, mode):
    edits = json.dumps({"contrast": 0.15, "sharpen": 0.5, "opacity": 1, "brightness": 0.1})
    response = alice_api.post(
        "/sam/batch_process",
        {
            "images": [
                upload("chelsea.png", photo_files["chelsea.png"]),
                upload("broken.png", b"not an image"),
                upload("camera.png", photo_files["camera.png"]),
            ],
            "mode": mode,
            "edits": edits,
            "export_mask": "1",
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 3
    good, bad, gray = body["results"]
    assert bad["filename"] == "broken.png" and bad["error"] and "variant_png" not in bad
    for result, name in ((good, "chelsea.png"), (gray, "camera.png")):
        assert result["filename"] == name and result["mode"] == mode
        mask = b64_mask(result["component_mask_png"])
        changed = changed_pixels(originals[name], b64_rgb(result["variant_png"]))
        assert changed.any() and not (changed & ~mask).any()
        session = LegacySession.objects.get(pk=result["image_id"])
        assert session.components.get().number == 1  # the region is kept: refine it with /sam/apply
        if mode == "full":
            assert result["score"] == 1.0 and mask.all()
        else:
            height, width = mask.shape
            assert mask[round((height - 1) / 2), round((width - 1) / 2)] and not mask.all()


def test_batch_process_stream(alice_api, photo_files):
    response = alice_api.post(
        "/api/sam/batch_process_stream",
        {
            "images": [upload("chelsea.png", photo_files["chelsea.png"]), upload("x.png", b"garbage")],
            "mode": "center_point",
            "edits": '{"brightness": 0.2}',
        },
    )
    assert response.status_code == 200
    events = parse_sse(read_stream(response))
    assert len(events) == 3 and events[-1] == "[DONE]"
    assert (
        events[0]["filename"] == "chelsea.png"
        and events[0]["variant_png"]
        and "component_mask_png" not in events[0]
    )
    assert events[1]["filename"] == "x.png" and events[1]["error"]
