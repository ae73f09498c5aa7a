"""Every error of SEED_API.md as JSON with its code and status; authentication, CSRF and alice/bob isolation;
bad input never turns into a 500 or an HTML page."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from django.test import Client

from datasets.models import Dataset
from imaging.codecs import b64encode, encode_mask_png
from tests.fixtures.factories import (
    DatasetFactory,
    DatasetImageFactory,
    LegacySessionFactory,
    TemplateFactory,
)
from tests.fixtures.images import make_zip
from tests.fixtures.seed_api import PREFIXES, init_dataset, post_json, upload

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")]

POST_ROUTES = [
    "dataset/init",
    "dataset/template/save",
    "dataset/point_preview",
    "dataset/template/preview",
    "dataset/precompute",
    "dataset/prewarm",
    "dataset/apply_stream",
    "init",
    "segment",
    "save_component",
    "apply",
    "batch_process",
    "batch_process_stream",
]
GET_ROUTES = ["dataset/templates", "components"]


def assert_error(response, status: int, code: str, /, **fields):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    for key, value in fields.items():
        assert body[key] == value, body
    return body


@pytest.fixture
def dataset(alice):
    """alice's dataset with two images (64x48 PNGs) and one template."""
    ds = DatasetFactory(owner=alice)
    DatasetImageFactory(dataset=ds, position=0)
    DatasetImageFactory(dataset=ds, position=1)
    TemplateFactory(dataset=ds, position=0)
    return ds


# --- authentication --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("route", POST_ROUTES + GET_ROUTES)
def test_anonymous_requests_get_401_json(client, prefix, route):
    method = client.get if route in GET_ROUTES else client.post
    body = assert_error(method(f"{prefix}/{route}"), 401, "unauthorized")
    assert body["detail"]


@pytest.mark.parametrize("path", ["/health", "/sam/health", "/api/sam/health"])
def test_health_is_public(client, path):
    body = client.get(path).json()
    assert body["status"] == "ok" and body["backend"] == "classical" and body["sam_loaded"] is False
    assert {"model", "device"} <= set(body)


def test_a_wrong_token_is_401(client):
    response = client.get("/sam/dataset/templates", HTTP_AUTHORIZATION="Token nope")
    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"] == "Token"


def test_session_requests_are_csrf_checked_and_token_requests_are_not(alice, dataset):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    body = {"dataset_id": dataset.id.hex, "points": [{"x_norm": 0.5, "y_norm": 0.5}]}
    assert_error(post_json(browser, "/sam/dataset/template/save", body), 403, "forbidden")
    browser.get("/sam/dataset/templates", {"dataset_id": dataset.id.hex})  # any page sets no token; fetch one
    from django.middleware.csrf import _get_new_csrf_string

    token = _get_new_csrf_string()
    browser.cookies["csrftoken"] = token
    ok = post_json(browser, "/sam/dataset/template/save", body, HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 200, ok.content


def test_session_login_works_like_a_token(alice_client, dataset):
    response = alice_client.get("/api/sam/dataset/templates", {"dataset_id": dataset.id.hex})
    assert response.status_code == 200 and len(response.json()["templates"]) == 1


# --- never HTML, never a 500 -----------------------------------------------------------------------------


def test_errors_are_json_even_when_html_is_asked_for(alice_api):
    response = alice_api.get("/sam/dataset/apply_stream", HTTP_ACCEPT="text/html")
    assert_error(response, 405, "method_not_allowed")
    response = post_json(alice_api, "/sam/dataset/templates", {}, HTTP_ACCEPT="text/event-stream")
    assert_error(response, 405, "method_not_allowed")


def test_a_body_that_is_not_json_is_400_invalid_json(alice_api):
    response = alice_api.post("/sam/dataset/template/save", data="{nope", content_type="application/json")
    assert_error(response, 400, "invalid_json")
    assert_error(post_json(alice_api, "/sam/segment", [1, 2]), 400, "invalid_json")


def test_json_without_a_content_type_is_still_read(alice_api, dataset):
    """``curl -d '{...}'`` without ``-H`` sends form-urlencoded; the old service read the JSON anyway."""
    import json

    body = json.dumps({"dataset_id": dataset.id.hex, "points": [{"x_norm": 0.2, "y_norm": 0.2}]})
    response = alice_api.post(
        "/sam/dataset/template/save", data=body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200, response.content
    assert response.json()["points_count"] == 1
    saved = dataset.templates.get(pk=response.json()["template_id"])
    assert saved.points == [{"x_norm": 0.2, "y_norm": 0.2, "positive": True}]


GARBAGE = [None, "x", 3, [1, "a"], {"a": 1}, ["x", {}], True, -1, 1e309, "../../etc/passwd"]


@pytest.mark.django_db(transaction=True)  # apply_stream's job starts on commit
@pytest.mark.parametrize("value", GARBAGE, ids=repr)
def test_garbage_in_any_field_is_a_4xx_json_answer(alice_api, dataset, value):
    image = dataset.images.first()
    template = dataset.templates.first()
    session = LegacySessionFactory(owner=dataset.owner)
    base = {"dataset_id": dataset.id.hex, "image_id": image.id.hex}
    bodies = [
        ("dataset/template/save", {**base, "points": value}),
        ("dataset/template/save", {**base, "points": [{"x_norm": value, "y_norm": 0.5}], "name": value}),
        ("dataset/template/save", {**base, "points": [{"x_norm": 0.5, "y_norm": 0.5}], "class": value}),
        ("dataset/point_preview", {**base, "points": [{"x_norm": 0.5, "y_norm": value}]}),
        ("dataset/point_preview", {"dataset_id": value, "image_id": value, "points": value}),
        ("dataset/template/preview", {**base, "edits": {template.id.hex: {"brightness": value}}}),
        ("dataset/template/preview", {**base, "edits": value, "class_filter": value}),
        ("dataset/template/preview", {"dataset_id": dataset.id.hex, "templates": value}),
        ("dataset/apply_stream", {"dataset_id": dataset.id.hex, "templates": [{"template_id": value}]}),
        ("dataset/apply_stream", {"dataset_id": dataset.id.hex, "edits": {template.id.hex: value}}),
        ("dataset/apply_stream", {"dataset_id": dataset.id.hex, "edits": value, "format": value}),
        ("segment", {"image_id": session.id.hex, "points": [{"x": value, "y": 1}], "top_k": value}),
        ("segment", {"image_id": value, "points": value, "accumulate": value}),
        ("save_component", {"image_id": session.id.hex, "mask_png": value, "score": value}),
        ("apply", {"image_id": session.id.hex, "edits": value}),
        ("apply", {"image_id": session.id.hex, "edits": [{"component_id": value, "gamma": value}]}),
        ("dataset/precompute", {"dataset_id": value}),
    ]
    for route, body in bodies:
        response = post_json(alice_api, f"/sam/{route}", body)
        if response.status_code == 200 and response["Content-Type"].startswith("text/event-stream"):
            b"".join(response)  # a valid stream (e.g. garbage that means "no change"): fine
            continue
        assert response["Content-Type"].startswith("application/json"), (route, body)
        assert response.status_code < 500, (route, body, response.content)
        if response.status_code >= 400:
            assert isinstance(response.json()["error"], str)


# --- dataset workflow errors -----------------------------------------------------------------------------


def test_init_errors(alice_api, settings, photo_files):
    assert_error(alice_api.post("/sam/dataset/init", {}), 400, "provide images[] or zip", code="no_files")
    settings.MAX_IMAGES_PER_DATASET = 2
    files = [upload(name, data) for name, data in photo_files.items()]
    assert_error(alice_api.post("/sam/dataset/init", {"images": files}), 400, "max_images_exceeded:4/2")
    bad_zip = upload("bad.zip", b"PK\x03\x04 truncated", "application/zip")
    assert_error(alice_api.post("/sam/dataset/init", {"zip": bad_zip}), 400, "zip_error:bad_archive")
    no_images = upload(
        "empty.zip",
        make_zip({"notes.txt": "no images here"}, compression=zipfile.ZIP_STORED),
        "application/zip",
    )
    assert_error(alice_api.post("/sam/dataset/init", {"zip": no_images}), 400, "zip_error:no_images")
    only_bad = [upload("a.png", b"not an image"), upload("b.jpg", b"")]
    body = assert_error(
        alice_api.post("/api/sam/dataset/init", {"images[]": only_bad}), 400, "no_valid_images"
    )
    assert [r["filename"] for r in body["rejected"]] == ["a.png", "b.jpg"]
    assert Dataset.objects.count() == 0  # nothing left behind


def test_init_keeps_good_files_reports_bad_ones_and_reads_zips(alice_api, photo_files):
    archive = make_zip(
        {
            "folder/sub/chelsea.png": photo_files["chelsea.png"],
            "camera.png": photo_files["camera.png"],
            "readme.txt": "skip me",
        },
        compression=zipfile.ZIP_STORED,
    )
    response = alice_api.post(
        "/sam/dataset/init",
        {
            "images[]": [
                upload("coffee_fail.png", photo_files["coffee_fail.png"]),
                upload("broken.png", b"\x89PNG..."),
            ],
            "zip": upload("photos.zip", archive, "application/zip"),
        },
    )
    body = response.json()
    assert response.status_code == 200, body
    assert body["count"] == 3
    assert sorted(i["filename"] for i in body["images"]) == ["camera.png", "chelsea.png", "coffee_fail.png"]
    assert [r["filename"] for r in body["rejected"]] == ["broken.png"] and body["rejected"][0]["error"]


def test_template_save_errors(alice_api, dataset):
    url = "/sam/dataset/template/save"
    point = {"x_norm": 0.5, "y_norm": 0.5}
    assert_error(post_json(alice_api, url, {"points": [point]}), 400, "dataset_id_required")
    assert_error(
        post_json(alice_api, url, {"dataset_id": "f" * 32, "points": [point]}), 404, "dataset_not_found"
    )
    assert_error(
        post_json(alice_api, url, {"dataset_id": "nonsense", "points": [point]}), 404, "dataset_not_found"
    )
    ds = dataset.id.hex
    assert_error(post_json(alice_api, url, {"dataset_id": ds}), 400, "no_points")
    assert_error(post_json(alice_api, url, {"dataset_id": ds, "points": []}), 400, "no_points")
    bad = [point, {"x_norm": "left", "y_norm": 0.5}]
    assert_error(post_json(alice_api, url, {"dataset_id": ds, "points": bad}), 400, "invalid_points", index=1)
    outside = [{"x_norm": 1.2, "y_norm": 0.5}]
    assert_error(
        post_json(alice_api, url, {"dataset_id": ds, "points": outside}), 400, "invalid_points", index=0
    )
    body = {"dataset_id": ds, "points": [point], "class": "maybe"}
    assert_error(post_json(alice_api, url, body), 400, "invalid_class")
    assert dataset.templates.count() == 1


def test_templates_and_preview_errors(alice_api, dataset, settings):
    ds = dataset.id.hex
    assert_error(alice_api.get("/sam/dataset/templates"), 400, "dataset_id_required")
    assert_error(alice_api.get("/sam/dataset/templates", {"dataset_id": "0" * 32}), 404, "dataset_not_found")
    url = "/sam/dataset/point_preview"
    points = [{"x_norm": 0.5, "y_norm": 0.5}]
    assert_error(post_json(alice_api, url, {"dataset_id": ds, "points": points}), 400, "image_id_required")
    image = dataset.images.first().id.hex
    assert_error(
        post_json(alice_api, url, {"dataset_id": ds, "image_id": "0" * 32, "points": points}),
        404,
        "image_not_found",
    )
    assert_error(post_json(alice_api, url, {"dataset_id": ds, "image_id": image}), 400, "no_points")
    other = DatasetImageFactory(dataset=DatasetFactory(owner=dataset.owner), position=0)
    body = {"dataset_id": ds, "image_id": other.id.hex, "points": points}
    assert_error(post_json(alice_api, url, body), 404, "image_not_found")  # an image of another dataset

    settings.SAM_BACKEND = "sam"  # required, and no checkpoint anywhere
    from imaging.registry import reset_segmenters

    reset_segmenters()
    body = {"dataset_id": ds, "image_id": image, "points": points}
    assert_error(post_json(alice_api, url, body), 503, "sam_model_not_loaded")
    assert_error(
        post_json(alice_api, "/sam/dataset/prewarm", {"dataset_id": ds}), 503, "sam_model_not_loaded"
    )
    assert_error(
        post_json(alice_api, "/sam/dataset/precompute", {"dataset_id": ds}), 503, "sam_model_not_loaded"
    )
    settings.SAM_BACKEND = "classical"
    reset_segmenters()

    url = "/sam/dataset/template/preview"
    template = dataset.templates.first().id.hex
    assert_error(
        post_json(alice_api, url, {"dataset_id": ds, "edits": {"0" * 32: {}}}), 404, "template_not_found"
    )
    bad_edit = {"dataset_id": ds, "edits": {template: {"brightness": 7}}}
    assert_error(
        post_json(alice_api, url, bad_edit), 400, "invalid_edits", field="brightness", template_id=template
    )
    assert_error(
        post_json(alice_api, url, {"dataset_id": ds, "class_filter": "fail"}), 404, "image_not_found"
    )


def test_apply_stream_pre_stream_errors_are_plain_json(alice_api, alice, dataset, settings):
    url = "/sam/dataset/apply_stream"
    assert_error(post_json(alice_api, url, {}), 400, "dataset_id_required")
    assert_error(post_json(alice_api, url + "?dataset_id=" + "a" * 32, {}), 404, "dataset_not_found")
    empty = DatasetFactory(owner=alice)
    assert_error(post_json(alice_api, url, {"dataset_id": empty.id.hex}), 400, "no_templates")
    ds = dataset.id.hex
    template = dataset.templates.first().id.hex
    body = {"dataset_id": ds, "templates": [{"template_id": "b" * 32}]}
    assert_error(post_json(alice_api, url, body), 404, "template_not_found")
    body = {"dataset_id": ds, "edits": {template: {"gamma": -3}}}
    assert_error(post_json(alice_api, url, body), 400, "invalid_edits", field="gamma")
    assert_error(post_json(alice_api, url, {"dataset_id": ds, "format": "gif"}), 400, "invalid_format")
    settings.SAM_BACKEND = "sam"  # required, and no checkpoint anywhere
    assert_error(post_json(alice_api, url, {"dataset_id": ds}), 503, "sam_model_not_loaded")
    assert dataset.jobs.count() == 0


# --- legacy errors ---------------------------------------------------------------------------------------


def test_legacy_errors(alice_api, alice, photo_files):
    assert_error(alice_api.post("/sam/init", {}), 400, "image file required")
    assert_error(alice_api.post("/sam/init", {"image": upload("x.png", b"nope")}), 400, "invalid_image")
    session = alice_api.post("/sam/init", {"image": upload("c.png", photo_files["chelsea.png"])}).json()
    image_id = session["image_id"]
    width, height = session["width"], session["height"]

    url = "/sam/segment"
    assert_error(post_json(alice_api, url, {"points": [{"x": 1, "y": 1}]}), 400, "image_id_required")
    assert_error(
        post_json(alice_api, url, {"image_id": "c" * 32, "points": [{"x": 1, "y": 1}]}),
        404,
        "image_not_found",
    )
    bad = [{"x": 1, "y": 1}, {"x": "abc", "y": 2}]
    assert_error(
        post_json(alice_api, url, {"image_id": image_id, "points": bad}), 400, "invalid_points", index=1
    )
    outside = [{"x": width, "y": 0}]
    assert_error(
        post_json(alice_api, url, {"image_id": image_id, "points": outside}), 400, "invalid_points", index=0
    )
    body = {"image_id": image_id, "points": [], "accumulate": False}
    assert_error(post_json(alice_api, url, body), 400, "no_points")
    body = {"image_id": image_id, "points": [{"x": 1, "y": 1}], "top_k": "many"}
    assert_error(post_json(alice_api, url, body), 400, "invalid_top_k")

    url = "/sam/save_component"
    assert_error(post_json(alice_api, url, {"image_id": image_id}), 400, "invalid mask_png")
    assert_error(
        post_json(alice_api, url, {"image_id": image_id, "mask_png": "%%% not base64"}),
        400,
        "invalid mask_png",
    )
    wrong_size = b64encode(encode_mask_png(np.ones((height + 1, width), dtype=bool)))
    assert_error(
        post_json(alice_api, url, {"image_id": image_id, "mask_png": wrong_size}), 400, "invalid mask_png"
    )
    empty = b64encode(encode_mask_png(np.zeros((height, width), dtype=bool)))
    assert_error(
        post_json(alice_api, url, {"image_id": image_id, "mask_png": empty}), 400, "invalid mask_png"
    )
    not_png = b64encode(b"GIF89a-ish bytes")
    assert_error(
        post_json(alice_api, url, {"image_id": image_id, "mask_png": not_png}), 400, "invalid mask_png"
    )
    assert_error(alice_api.get("/sam/components"), 400, "image_id_required")

    mask = b64encode(encode_mask_png(np.ones((height, width), dtype=bool)))
    post_json(alice_api, url, {"image_id": image_id, "mask_png": mask})
    url = "/sam/apply"
    body = {"image_id": image_id, "edits": [{"component_id": 9, "brightness": 0.1}]}
    assert_error(post_json(alice_api, url, body), 404, "component_not_found", component_id=9)
    body = {"image_id": image_id, "edits": [{"component_id": 1, "noise": 0.9}]}
    assert_error(post_json(alice_api, url, body), 400, "invalid_edits", field="noise", index=0)


def test_batch_errors(alice_api, settings, photo_files):
    files = {"images": [upload("c.png", photo_files["chelsea.png"])]}
    for route in ("/sam/batch_process", "/api/sam/batch_process_stream"):
        assert_error(alice_api.post(route, {"mode": "full"}), 400, "image file required")
        assert_error(alice_api.post(route, {**files, "edits": "{brightness:"}), 400, "invalid edits JSON")
        assert_error(alice_api.post(route, {**files, "edits": "[1, 2]"}), 400, "invalid edits JSON")
        assert_error(
            alice_api.post(route, {**files, "edits": '{"contrast": 9}'}),
            400,
            "invalid_edits",
            field="contrast",
        )
        assert_error(alice_api.post(route, {**files, "mode": "everything"}), 400, "invalid mode")
    settings.SAM_BACKEND = "sam"
    from imaging.registry import reset_segmenters

    reset_segmenters()
    files = {"images": [upload("c.png", photo_files["chelsea.png"])]}
    assert_error(
        alice_api.post("/sam/batch_process", {**files, "mode": "center_point"}), 503, "sam_model_not_loaded"
    )
    assert alice_api.post("/sam/batch_process", {**files, "mode": "full"}).json()["count"] == 1


# --- isolation -------------------------------------------------------------------------------------------


def test_bob_cannot_reach_alices_records(alice_api, bob_api, photo_files):
    body = init_dataset(alice_api, photo_files, names=["chelsea.png"])
    ds, image = body["dataset_id"], body["images"][0]["id"]
    template = post_json(
        alice_api,
        "/sam/dataset/template/save",
        {"dataset_id": ds, "points": [{"x_norm": 0.5, "y_norm": 0.5}]},
    ).json()["id"]
    session = alice_api.post("/sam/init", {"image": upload("c.png", photo_files["chelsea.png"])}).json()[
        "image_id"
    ]
    points = [{"x_norm": 0.5, "y_norm": 0.5}]

    assert_error(bob_api.get("/sam/dataset/templates", {"dataset_id": ds}), 404, "dataset_not_found")
    assert_error(
        post_json(bob_api, "/sam/dataset/template/save", {"dataset_id": ds, "points": points}),
        404,
        "dataset_not_found",
    )
    body = {"dataset_id": ds, "image_id": image, "points": points}
    assert_error(post_json(bob_api, "/sam/dataset/point_preview", body), 404, "dataset_not_found")
    assert_error(
        post_json(bob_api, "/api/sam/dataset/apply_stream", {"dataset_id": ds}), 404, "dataset_not_found"
    )
    assert_error(post_json(bob_api, "/sam/dataset/prewarm", {"dataset_id": ds}), 404, "dataset_not_found")
    assert_error(post_json(bob_api, "/sam/dataset/precompute", {"dataset_id": ds}), 404, "dataset_not_found")
    assert_error(
        post_json(bob_api, "/sam/dataset/template/preview", {"dataset_id": ds}), 404, "dataset_not_found"
    )

    # bob's own dataset, alice's image and template ids
    own = init_dataset(bob_api, photo_files, names=["camera.png"])["dataset_id"]
    body = {"dataset_id": own, "image_id": image, "points": points}
    assert_error(post_json(bob_api, "/sam/dataset/point_preview", body), 404, "image_not_found")
    body = {"dataset_id": own, "image_id": image, "points": points}
    assert_error(post_json(bob_api, "/sam/dataset/template/save", body), 404, "image_not_found")
    body = {"dataset_id": own, "edits": {template: {"brightness": 0.1}}}
    assert_error(post_json(bob_api, "/sam/dataset/apply_stream", body), 404, "template_not_found")
    assert_error(post_json(bob_api, "/sam/dataset/template/preview", body), 404, "template_not_found")

    # the legacy image (session) id
    assert_error(
        post_json(bob_api, "/sam/segment", {"image_id": session, "points": [{"x": 1, "y": 1}]}),
        404,
        "image_not_found",
    )
    assert_error(bob_api.get("/api/sam/components", {"image_id": session}), 404, "image_not_found")
    assert_error(post_json(bob_api, "/sam/apply", {"image_id": session, "edits": []}), 404, "image_not_found")
    mask = b64encode(encode_mask_png(np.ones((2, 2), dtype=bool)))
    assert_error(
        post_json(bob_api, "/sam/save_component", {"image_id": session, "mask_png": mask}),
        404,
        "image_not_found",
    )
