"""The dataset workflow driven like the old front end and README scripts: init, point preview, templates,
template preview, apply_stream in both body shapes, and the job it leaves in the user's history."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.models import GenerationJob, JobSource, JobStatus, Variant
from tests.fixtures.seed_api import (
    PREFIXES,
    b64_image,
    b64_mask,
    b64_rgb,
    changed_pixels,
    init_dataset,
    parse_sse,
    post_json,
    read_stream,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume"),
]


def _save_templates(client, prefix, dataset, images):
    face = post_json(
        client,
        f"{prefix}/dataset/template/save",
        {
            "dataset_id": dataset,
            "image_filename": "astronaut_pass.png",
            "points": [{"x_norm": 0.45, "y_norm": 0.3, "positive": True}],
            "name": "face",
        },
    )
    body = {
        "dataset_id": dataset,
        "points": [{"x_norm": "0.5", "y_norm": 0.5}, {"x_norm": 0.02, "y_norm": 0.02, "positive": False}],
        "class": "fail",
    }
    if "coffee_fail.png" in images:
        body["image_id"] = images["coffee_fail.png"]["id"]
    cup = post_json(client, f"{prefix}/dataset/template/save", body)
    assert face.status_code == 200 and cup.status_code == 200, (face.content, cup.content)
    return face.json(), cup.json()


@pytest.mark.parametrize("prefix", PREFIXES)
def test_the_whole_dataset_workflow(alice, alice_api, photo_files, originals, prefix):
    # 1. init: every file kept, thumbnails are base64 PNGs with a longest side of 160 px
    body = init_dataset(alice_api, photo_files, prefix)
    dataset = body["dataset_id"]
    assert len(dataset) == 32 and body["count"] == 4 and body["rejected"] == []
    images = {image["filename"]: image for image in body["images"]}
    assert list(images) == list(photo_files)
    for name, image in images.items():
        height, width = originals[name].shape[:2]
        assert (image["width"], image["height"]) == (width, height)
        thumb = b64_image(image["thumb_b64"])
        assert thumb.format == "PNG" and max(thumb.size) == 160
    assert images["astronaut_pass.png"]["class"] == "pass" and images["chelsea.png"]["class"] == ""

    # 2. point preview: a 0/255 mask of the image's size containing the clicked point
    astronaut = images["astronaut_pass.png"]
    preview = post_json(
        alice_api,
        f"{prefix}/dataset/point_preview",
        {"dataset_id": dataset, "image_id": astronaut["id"], "points": [{"x_norm": 0.45, "y_norm": 0.3}]},
    )
    assert preview.status_code == 200, preview.content
    preview = preview.json()
    mask = b64_mask(preview["mask_png"])
    assert mask.shape == (preview["height"], preview["width"]) == (astronaut["height"], astronaut["width"])
    assert mask[round(0.3 * (mask.shape[0] - 1)), round(0.45 * (mask.shape[1] - 1))]
    assert 0 < mask.sum() < mask.size and isinstance(preview["score"], float)

    # 3. two templates, one with a class; names default to "Template N"
    face, cup = _save_templates(alice_api, prefix, dataset, images)
    assert face["template_id"] == face["id"] and face["name"] == "face" and face["class"] == ""
    assert face["count"] == face["points_count"] == 1
    assert cup["name"] == "Template 2" and cup["class"] == "fail" and cup["count"] == cup["points_count"] == 2

    # 4. templates, in save order
    listed = alice_api.get(f"{prefix}/dataset/templates", {"dataset_id": dataset}).json()["templates"]
    assert [t["id"] for t in listed] == [face["id"], cup["id"]]
    assert listed[1] == {
        "id": cup["id"],
        "template_id": cup["id"],
        "name": "Template 2",
        "class": "fail",
        "points_count": 2,
        "points": [
            {"x_norm": 0.5, "y_norm": 0.5, "positive": True},
            {"x_norm": 0.02, "y_norm": 0.02, "positive": False},
        ],
        "image_id": images["coffee_fail.png"]["id"],
    }

    # 5. template preview: first "fail" image, both templates stacked
    stacked = post_json(
        alice_api,
        f"{prefix}/dataset/template/preview",
        {
            "dataset_id": dataset,
            "class_filter": "fail",
            "edits": {face["id"]: {"brightness": 0.4}, cup["id"]: {}},
        },
    )
    assert stacked.status_code == 200, stacked.content
    stacked = stacked.json()
    assert stacked["filename"] == "coffee_fail.png" and stacked["template_names"] == ["face", "Template 2"]
    assert changed_pixels(originals["coffee_fail.png"], b64_rgb(stacked["variant_png"])).any()

    # 6. apply_stream, edits keyed by template id, masks exported, lossless PNG asked for (the default
    # stream format is the old server's lossy WebP, see test_seed_stream_defaults_*)
    response = post_json(
        alice_api,
        f"{prefix}/dataset/apply_stream",
        {
            "dataset_id": dataset,
            "edits": {
                face["id"]: {"brightness": 0.3, "contrast": 0.2},
                cup["id"]: {"hue": 60, "saturation": 0.5},
            },
            "export_mask": True,
            "format": "png",
        },
    )
    assert response.status_code == 200
    events = parse_sse(read_stream(response))
    assert events[-1] == "[DONE]"
    done = events[-2]
    per_image = events[:-2]
    assert [e["index"] for e in per_image] == [0, 1, 2, 3]
    expected_names = {
        "astronaut_pass.png": ["face"],  # the "fail" template skips a "pass" image
        "coffee_fail.png": ["face", "Template 2"],
        "chelsea.png": ["face", "Template 2"],  # unclassed images take every template
        "camera.png": ["face", "Template 2"],
    }
    for event in per_image:
        name = event["filename"]
        assert event["total"] == 4 and event["image_id"] == images[name]["id"]
        assert event["template_names"] == expected_names[name]
        assert event["template_name"] == " + ".join(expected_names[name])
        variant = b64_rgb(event["variant_png"])
        mask = b64_mask(event["mask_png"])
        assert variant.shape == originals[name].shape and mask.shape == variant.shape[:2]
        changed = changed_pixels(originals[name], variant)
        assert changed.any() and not (changed & ~mask).any(), name  # edits stay inside the masks
        assert isinstance(event["ms"], int)
    camera = next(e for e in per_image if e["filename"] == "camera.png")
    variant = b64_rgb(camera["variant_png"])
    assert (variant[..., 0] == variant[..., 1]).all() and (variant[..., 1] == variant[..., 2]).all()
    assert done["done"] is True and (done["total"], done["succeeded"], done["failed"]) == (4, 4, 0)

    # the run is a persisted job in alice's history, its variants stored
    job = GenerationJob.objects.get(pk=done["job_id"])
    assert (job.owner, job.source, job.status, job.compose) == (
        alice,
        JobSource.SEED,
        JobStatus.SUCCEEDED,
        "stack",
    )
    assert job.export_mask and job.variant_count == 4
    assert [s["name"] for s in job.templates_snapshot] == ["face", "Template 2"]
    assert job.templates_snapshot[1]["edits"]["hue"] == 60.0
    assert Variant.objects.filter(job=job).count() == 4
    history = alice_api.get(f"/api/jobs/{job.id.hex}/")
    if history.status_code != 404:  # the jobs API may not be routed yet
        assert history.status_code == 200

    # 7. the other body shape, dataset_id in the query string, webp output, one template listed
    response = post_json(
        alice_api,
        f"{prefix}/dataset/apply_stream?dataset_id={dataset}",
        {"templates": [{"template_id": face["id"], "edits": {"gamma": 0.5}}], "format": "webp"},
    )
    events = parse_sse(read_stream(response))
    assert events[-1] == "[DONE]" and events[-2]["succeeded"] == 4
    for event in events[:-2]:
        assert event["template_names"] == ["face"] and "mask_png" not in event
        assert b64_image(event["variant_png"]).format == "WEBP"
    second = GenerationJob.objects.get(pk=events[-2]["job_id"])
    assert second.output_format == "webp" and len(second.templates_snapshot) == 1
    assert GenerationJob.objects.filter(owner=alice, source=JobSource.SEED).count() == 2


def test_apply_stream_without_templates_listed_uses_saved_defaults(alice_api, photo_files, originals):
    body = init_dataset(alice_api, photo_files, names=["chelsea.png"])
    images = {image["filename"]: image for image in body["images"]}
    face, _cup = _save_templates(alice_api, "/sam", body["dataset_id"], images)
    from templates_app.models import Template

    Template.objects.filter(pk=face["id"]).update(default_edits={"brightness": 0.5})
    events = parse_sse(
        read_stream(post_json(alice_api, "/sam/dataset/apply_stream", {"dataset_id": body["dataset_id"]}))
    )
    (event,) = events[:-2]
    assert event["template_names"] == ["face", "Template 2"]
    job = GenerationJob.objects.get(pk=events[-2]["job_id"])
    assert job.templates_snapshot[0]["edits"]["brightness"] == 0.5
    assert job.templates_snapshot[1]["edits"]["brightness"] == 0.0
    assert changed_pixels(originals["chelsea.png"], b64_rgb(event["variant_png"])).any()

    # a flat edits object (keys are slider names, not template ids) applies to every template
    body = {"dataset_id": body["dataset_id"], "edits": {"contrast": 0.3}}
    events = parse_sse(read_stream(post_json(alice_api, "/sam/dataset/apply_stream/", body)))
    job = GenerationJob.objects.get(pk=events[-2]["job_id"])
    assert [s["edits"]["contrast"] for s in job.templates_snapshot] == [0.3, 0.3]
    assert [s["edits"]["brightness"] for s in job.templates_snapshot] == [0.0, 0.0]


def test_colour_photo_with_only_some_sliders_set(alice_api, photo_files, originals):
    """The old tool crashed when hue or saturation was missing and lost brightness on colour images."""
    body = init_dataset(alice_api, photo_files, names=["chelsea.png"])
    dataset = body["dataset_id"]
    image = body["images"][0]
    template = post_json(
        alice_api,
        "/sam/dataset/template/save",
        {"dataset_id": dataset, "points": [{"x_norm": 0.5, "y_norm": 0.55}]},
    ).json()
    original = originals["chelsea.png"].astype(int)
    for edits in ({"brightness": 0.25}, {"hue": 45}, {"saturation": 0.8}, {"contrast": 0.4, "unknown": 3}):
        events = parse_sse(
            read_stream(
                post_json(
                    alice_api,
                    "/sam/dataset/apply_stream",
                    {
                        "dataset_id": dataset,
                        "templates": [{"template_id": template["id"], "edits": edits}],
                        "export_mask": 1,
                        "format": "png",
                    },
                )
            )
        )
        event = events[0]
        assert "error" not in event, event
        variant = b64_rgb(event["variant_png"]).astype(int)
        mask = b64_mask(event["mask_png"])
        changed = changed_pixels(original, variant)
        assert changed.any() and not (changed & ~mask).any(), edits
        if "brightness" in edits:
            assert variant[mask].mean() > original[mask].mean() + 20
    preview = post_json(
        alice_api,
        "/sam/dataset/template/preview",
        {"dataset_id": dataset, "image_id": image["id"], "edits": {template["id"]: {"hue": 90}}},
    ).json()
    assert changed_pixels(originals["chelsea.png"], b64_rgb(preview["variant_png"])).any()


def test_an_image_no_template_applies_to_gets_its_unedited_event(alice_api, photo_files, originals):
    body = init_dataset(alice_api, photo_files, names=["astronaut_pass.png", "coffee_fail.png"])
    images = {image["filename"]: image for image in body["images"]}
    _face, cup = _save_templates(alice_api, "/sam", body["dataset_id"], images)
    events = parse_sse(
        read_stream(
            post_json(
                alice_api,
                "/sam/dataset/apply_stream",
                {
                    "dataset_id": body["dataset_id"],
                    "edits": {cup["id"]: {"brightness": 0.3}},
                    "export_mask": True,
                    "format": "png",
                },
            )
        )
    )
    skipped, edited = events[0], events[1]
    assert skipped["filename"] == "astronaut_pass.png" and skipped["skipped"] is True
    assert skipped["template_names"] == [] and not b64_mask(skipped["mask_png"]).any()
    assert np.array_equal(b64_rgb(skipped["variant_png"]), originals["astronaut_pass.png"])
    assert edited["template_names"] == ["Template 2"] and "skipped" not in edited
    assert events[2]["succeeded"] == 2 and events[2]["skipped"] == 1 and events[2]["failed"] == 0


def test_a_failing_image_is_an_error_event_and_the_stream_goes_on(alice_api, photo_files):
    body = init_dataset(alice_api, photo_files, names=["chelsea.png", "camera.png"])
    images = {image["filename"]: image for image in body["images"]}
    _save_templates(alice_api, "/sam", body["dataset_id"], images)
    from datasets.models import DatasetImage

    broken = DatasetImage.objects.get(pk=images["chelsea.png"]["id"])
    with broken.file.open("wb") as handle:
        handle.write(b"no longer a png")
    events = parse_sse(
        read_stream(post_json(alice_api, "/sam/dataset/apply_stream", {"dataset_id": body["dataset_id"]}))
    )
    failed, fine, done, end = events
    assert failed["filename"] == "chelsea.png" and failed["error"] and "variant_png" not in failed
    assert set(failed) == {"index", "total", "filename", "image_id", "error"}
    assert fine["filename"] == "camera.png" and fine["variant_png"]
    assert (done["succeeded"], done["failed"]) == (1, 1) and end == "[DONE]"


def test_precompute_and_prewarm(alice_api, photo_files, use_tiny_sam):
    body = init_dataset(alice_api, photo_files, names=["chelsea.png", "camera.png"])
    dataset = body["dataset_id"]
    first = post_json(alice_api, "/sam/dataset/precompute", {"dataset_id": dataset}).json()
    assert first["cached_added"] == 2 and first["total_cache"] >= 2
    again = post_json(alice_api, "/api/sam/dataset/precompute", {"dataset_id": dataset}).json()
    assert again["cached_added"] == 0 and again["total_cache"] == first["total_cache"]

    more = init_dataset(alice_api, photo_files, names=["coffee_fail.png", "chelsea.png"])
    response = post_json(alice_api, "/sam/dataset/prewarm", {"dataset_id": more["dataset_id"]})
    events = parse_sse(read_stream(response))
    assert [(e["filename"], e.get("computed"), e.get("skipped")) for e in events[:-1]] == [
        ("coffee_fail.png", True, None),
        ("chelsea.png", None, True),  # same content as in the first dataset: the cache is shared
    ]
    assert all(e["total"] == 2 and isinstance(e["ms"], int) for e in events[:-1])
    assert events[-1] == {"done": True, "total": 2, "computed": 1, "skipped": 1, "errors": 0}


def test_apply_stream_with_the_sam_backend(alice_api, photo_files, originals, use_tiny_sam):
    body = init_dataset(alice_api, photo_files, names=["chelsea.png", "coffee_fail.png"])
    images = {image["filename"]: image for image in body["images"]}
    face, _cup = _save_templates(alice_api, "/sam", body["dataset_id"], images)
    events = parse_sse(
        read_stream(
            post_json(
                alice_api,
                "/sam/dataset/apply_stream",
                {
                    "dataset_id": body["dataset_id"],
                    "edits": {face["id"]: {"brightness": 0.5}},
                    "export_mask": True,
                    "format": "png",
                },
            )
        )
    )
    assert events[-2]["succeeded"] == 2
    for event in events[:-2]:
        changed = changed_pixels(originals[event["filename"]], b64_rgb(event["variant_png"]))
        assert not (changed & ~b64_mask(event["mask_png"])).any()
    assert GenerationJob.objects.get(pk=events[-2]["job_id"]).segmenter.startswith("sam")
