"""Grayscale in, grayscale out on the seed API too (issue 16): the seed stream's re-encode from the stored file
(its decoder gives three channels), the skipped-image event, /sam/apply and /sam/batch_process all write a
grayscale upload as one channel, through the REST job's own rule (``imaging.pipeline.output_pixels``).
PNG and JPEG have a one-channel layout; WebP has none, so its channels must agree (flat chroma)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datasets.jobs.outputs import recent_outputs
from tests.fixtures.seed_api import b64_image, init_dataset, parse_sse, post_json, read_stream, upload

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")]


def _assert_channels(image, *, gray: bool, fmt: str) -> None:
    if not gray:
        assert image.mode == "RGB", image.mode
    elif fmt in ("png", "jpeg"):
        assert image.mode == "L", f"a grayscale {fmt} came out {image.mode}"
    else:
        rgb = np.asarray(image.convert("RGB")).astype(np.int16)
        assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 1 and np.abs(rgb[..., 1] - rgb[..., 2]).max() <= 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_seed_stream_reencoded_from_storage_keeps_grayscale_single_channel(
    alice_api, photo_files, settings, monkeypatch, fmt
):
    settings.SEED_MAX_SIDE = 120  # the 192 px photos are resized: the stream re-encodes
    # The runner's in-process buffers are missed (as when the job ran in another process): storage is read.
    monkeypatch.setattr(recent_outputs, "get", lambda *args, **kwargs: None)
    body = init_dataset(alice_api, photo_files, names=["camera.png", "chelsea.png"])
    template = post_json(
        alice_api,
        "/sam/dataset/template/save",
        {"dataset_id": body["dataset_id"], "points": [{"x_norm": 0.5, "y_norm": 0.5}], "name": "centre"},
    ).json()
    request = {
        "dataset_id": body["dataset_id"],
        "edits": {template["id"]: {"brightness": 0.2}},
        "format": fmt,
    }
    events = parse_sse(read_stream(post_json(alice_api, "/sam/dataset/apply_stream", request)))
    assert events[-1] == "[DONE]" and events[-2]["succeeded"] == 2
    by_name = {event["filename"]: b64_image(event["variant_png"]) for event in events[:-2]}
    assert max(by_name["camera.png"].size) == 120
    _assert_channels(by_name["camera.png"], gray=True, fmt=fmt)
    _assert_channels(by_name["chelsea.png"], gray=False, fmt=fmt)


@pytest.mark.django_db(transaction=True)
def test_seed_stream_skipped_grayscale_image_stays_single_channel(alice_api, photo_files, settings):
    settings.SEED_OUTPUT_FORMAT = "png"
    # a fail image and a pass-only template: the image is skipped, streamed unedited
    body = alice_api.post(
        "/sam/dataset/init",
        {"images": [upload("camera_fail.png", photo_files["camera.png"])]},
        format="multipart",
    ).json()
    template = post_json(
        alice_api,
        "/sam/dataset/template/save",
        {
            "dataset_id": body["dataset_id"],
            "points": [{"x_norm": 0.5, "y_norm": 0.5}],
            "name": "p",
            "class": "pass",
        },
    ).json()
    request = {"dataset_id": body["dataset_id"], "edits": {template["id"]: {"brightness": 0.2}}}
    events = parse_sse(read_stream(post_json(alice_api, "/sam/dataset/apply_stream", request)))
    skipped = [event for event in events[:-2] if event.get("skipped")]
    assert skipped, events
    _assert_channels(b64_image(skipped[0]["variant_png"]), gray=True, fmt="png")


@pytest.mark.parametrize("mode", ["full", "center_point"])
def test_batch_process_keeps_grayscale_single_channel(alice_api, photo_files, mode):
    response = alice_api.post(
        "/sam/batch_process",
        {
            "images": [
                upload("camera.png", photo_files["camera.png"]),
                upload("chelsea.png", photo_files["chelsea.png"]),
            ],
            "mode": mode,
            "edits": json.dumps({"brightness": 0.1, "hue": 30}),
        },
    )
    assert response.status_code == 200, response.content
    gray, colour = response.json()["results"]
    _assert_channels(b64_image(gray["variant_png"]), gray=True, fmt="png")
    _assert_channels(b64_image(colour["variant_png"]), gray=False, fmt="png")


def test_apply_keeps_grayscale_single_channel(alice_api, photo_files):
    image_id = alice_api.post("/sam/init", {"image": upload("camera.png", photo_files["camera.png"])}).json()[
        "image_id"
    ]
    applied = post_json(
        alice_api, "/sam/apply", {"image_id": image_id, "edits": [{"brightness": 0.1}]}
    ).json()
    _assert_channels(b64_image(applied["variant_png"]), gray=True, fmt="png")
