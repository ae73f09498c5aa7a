"""Gaps a black-box audit found after the first hardening pass (issue 11): deep JSON in form fields and the
token endpoint, API errors as JSON whatever the Accept header, bounded lists."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from tests.fixtures.factories import DatasetFactory, DatasetImageFactory, add_templates

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000


@pytest.fixture
def image(alice):
    return DatasetImageFactory(dataset=DatasetFactory(owner=alice))


def _assert_json_400(response):
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    text = response.content.decode()
    assert "DATABASE_URL" not in text and "Traceback" not in text
    return response.json()


@pytest.mark.parametrize("debug", [False, True])
def test_deep_json_to_the_token_endpoint_is_a_400_json_error(client, debug):
    with override_settings(DEBUG=debug):
        response = client.post("/api/auth/token/", DEEP, content_type="application/json")

    body = _assert_json_400(response)
    assert body["error"] == "parse_error" and "nested" in body["detail"]


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_deep_json_in_form_encoded_json_fields_is_a_400_json_error(alice_api, image, debug, encoding):
    dataset = image.dataset
    (template,) = add_templates(dataset, 1)
    calls = [
        ("post", f"/api/images/{image.id.hex}/segment/", {"points": DEEP}, "points"),
        ("patch", f"/api/templates/{template.id.hex}/", {"default_edits": DEEP}, "default_edits"),
        ("post", f"/api/datasets/{dataset.id.hex}/templates/", {"name": "t", "points": DEEP}, "points"),
        ("post", f"/api/datasets/{dataset.id.hex}/preview/", {"templates": DEEP}, "templates"),
    ]
    with override_settings(DEBUG=debug):
        for method, path, data, field in calls:
            if encoding == "form":
                from urllib.parse import urlencode

                response = getattr(alice_api, method)(
                    path, urlencode(data), content_type="application/x-www-form-urlencoded"
                )
            else:
                response = getattr(alice_api, method)(path, data, format="multipart")
            body = _assert_json_400(response)
            assert body["error"] == "validation_error", (path, body)
            assert "MAX_JSON_DEPTH" in str(body["fields"][field]), (path, body)


def test_a_moderately_deep_form_value_is_refused_by_the_project_limit(alice_api, image, settings):
    settings.MAX_JSON_DEPTH = 8
    response = alice_api.post(
        f"/api/images/{image.id.hex}/segment/", {"points": "[" * 10 + "]" * 10}, format="multipart"
    )

    assert "MAX_JSON_DEPTH" in str(_assert_json_400(response)["fields"]["points"])


def test_form_encoded_json_fields_still_parse(alice_api, image):
    response = alice_api.post(
        f"/api/images/{image.id.hex}/segment/",
        {"points": '[{"x_norm": 0.5, "y_norm": 0.5, "positive": true}]'},
        format="multipart",
    )

    assert response.status_code == 200, response.content[:300]


# --- item 3: anonymous upload bodies get the small limit -------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/api/datasets/x/images/", "/sam/init", "/api/sam/dataset/init"])
def test_an_anonymous_upload_body_is_refused_before_it_is_read(path):
    from samsite.asgi import application
    from tests.hardening.test_requests import _asgi_call

    status, body, pulled = _asgi_call(
        application,
        path=path,
        headers=[
            (b"content-length", str(300 * 1024 * 1024).encode()),
            (b"content-type", b"multipart/form-data; boundary=x"),
            (b"authorization", b"Token not-a-real-token"),
            (b"cookie", b"sessionid=not-a-session"),
        ],
        chunks=[b"x" * 1024],
    )

    assert status == 413 and pulled == 0
    parsed = json.loads(body)
    assert parsed["error"] == "request_too_large" and parsed["limit"] == "MAX_REQUEST_BODY_MB"


@pytest.mark.django_db(transaction=True)
def test_an_anonymous_chunked_upload_is_cut_off_at_the_small_limit(settings):
    from samsite.asgi import application
    from tests.hardening.test_requests import _asgi_call

    settings.MAX_REQUEST_BODY_MB = 1
    status, body, pulled = _asgi_call(
        application,
        path="/api/datasets/x/images/",
        headers=[(b"content-type", b"multipart/form-data; boundary=x")],
        chunks=[b"x" * (256 * 1024)] * 40,
    )

    assert status == 413 and json.loads(body)["limit"] == "MAX_REQUEST_BODY_MB" and pulled == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("credential", ["token", "session"])
def test_a_signed_in_upload_gets_the_upload_limit(alice, settings, credential):
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from samsite.asgi import application
    from tests.hardening.test_requests import _asgi_call

    settings.MAX_REQUEST_BODY_MB = 1
    if credential == "token":
        header = (b"authorization", f"Token {Token.objects.create(user=alice).key}".encode())
    else:
        client = Client()
        client.force_login(alice)
        header = (b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.session.session_key}".encode())
    chunks = [b"x" * (256 * 1024)] * 8  # 2 MiB: over the anonymous limit, under the upload limit
    status, body, pulled = _asgi_call(
        application,
        path="/api/datasets/x/images/",
        headers=[
            (b"content-length", str(2 * 1024 * 1024).encode()),
            (b"content-type", b"multipart/form-data; boundary=x"),
            header,
        ],
        chunks=chunks,
    )

    assert status != 413 and pulled == len(chunks), body[:300]


# --- item 4: bounded id lists ------------------------------------------------------------------------------


def test_prewarm_refuses_too_many_or_duplicate_image_ids_before_any_lookup(
    alice_api, image, settings, django_assert_max_num_queries
):
    settings.MAX_IMAGES_PER_DATASET = 5
    url = f"/api/datasets/{image.dataset.id.hex}/prewarm/"

    with django_assert_max_num_queries(12):  # auth, throttle, the dataset: no query per id
        too_many = alice_api.post(url, {"image_ids": [image.id.hex] * 6}, format="json")
    duplicate = alice_api.post(url, {"image_ids": [image.id.hex, "x", image.id.hex]}, format="json")

    assert too_many.status_code == 400
    assert (
        too_many.json()["error"] == "too_many_images" and too_many.json()["limit"] == "MAX_IMAGES_PER_DATASET"
    )
    assert duplicate.status_code == 400
    assert duplicate.json()["error"] == "duplicate_image" and duplicate.json()["index"] == 2


def test_job_creation_refuses_too_many_or_duplicate_templates_before_any_lookup(
    alice_api, image, settings, django_assert_max_num_queries
):
    settings.MAX_TEMPLATES_PER_DATASET = 3
    (template,) = add_templates(image.dataset, 1)
    url = f"/api/datasets/{image.dataset.id.hex}/jobs/"
    entry = {"template_id": template.id.hex}

    with django_assert_max_num_queries(12):
        too_many = alice_api.post(url, {"templates": [entry] * 4}, format="json")
    with django_assert_max_num_queries(12):
        duplicate = alice_api.post(url, {"templates": [entry, entry]}, format="json")

    assert too_many.status_code == 400
    body = too_many.json()
    assert body["error"] == "too_many_templates" and body["limit"] == "MAX_TEMPLATES_PER_DATASET"
    assert duplicate.status_code == 400
    assert duplicate.json()["error"] == "duplicate_template" and duplicate.json()["index"] == 1
    assert not image.dataset.jobs.exists()


# --- item 7: API errors are JSON whatever the Accept header ------------------------------------------------


def test_api_errors_are_json_even_when_html_is_accepted(alice_api, client, image):
    html = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"}
    missing = alice_api.get("/api/datasets/0123456789abcdef0123456789abcdef/", **html)
    anonymous = client.get("/api/datasets/", **html)
    malformed = alice_api.post(
        f"/api/images/{image.id.hex}/segment/", "{not json", content_type="application/json", **html
    )
    ok = alice_api.get("/api/datasets/", **html)

    for response, status, code in (
        (missing, 404, "not_found"),
        (anonymous, 401, "not_authenticated"),
        (malformed, 400, "parse_error"),
    ):
        assert response.status_code == status
        assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
        assert response.json()["error"] == code
    assert ok.status_code == 200 and ok["Content-Type"].startswith("text/html")  # the browsable API stays


# --- item 5: the page's display PNG is stored once, and throttled ------------------------------------------


def _tiff_image(owner, width, height):
    import hashlib

    import numpy as np
    from django.core.files.base import ContentFile

    from tests.fixtures.images import image_bytes

    rng = np.random.default_rng(3)
    content = image_bytes(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "TIFF")
    return DatasetImageFactory(
        dataset=DatasetFactory(owner=owner),
        file=ContentFile(content, name="scan.tif"),
        original_filename="scan.tif",
        filename="scan.tif",
        width=width,
        height=height,
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )


@pytest.mark.parametrize("size", [(600, 400), (120, 80)])
def test_the_display_png_is_made_once_then_read_from_storage(
    alice, alice_client, settings, monkeypatch, size
):
    import io

    from PIL import Image

    from datasets.services import previews

    settings.PREVIEW_MAX_SIDE = 300
    image = _tiff_image(alice, *size)
    decodes = []
    original = previews.decode_dataset_image
    monkeypatch.setattr(previews, "decode_dataset_image", lambda i: decodes.append(i) or original(i))
    url = f"/datasets/{image.dataset.id.hex}/images/{image.id.hex}/display/"

    first = alice_client.get(url)
    second = alice_client.get(url)

    assert first.status_code == second.status_code == 200
    assert first["Content-Type"] == "image/png" and first.content == second.content
    assert len(decodes) == 1  # the second request read the stored PNG
    expected = previews.working_size(*size)
    assert Image.open(io.BytesIO(second.content)).size == expected


def test_the_display_view_counts_against_the_previews_throttle(alice, alice_client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "previews": "1/min"},
    }
    image = _tiff_image(alice, 40, 30)
    url = f"/datasets/{image.dataset.id.hex}/images/{image.id.hex}/display/"

    assert alice_client.get(url).status_code == 200
    over = alice_client.get(url)
    assert over.status_code == 429 and over.json()["limit"] == "THROTTLE_PREVIEWS"


# --- item 9: the seed streams count in the SSE cap ---------------------------------------------------------


def test_the_seed_streams_count_in_the_stream_cap(alice, alice_api, image, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets.jobs.events import stream_slot_acquire, stream_slot_release
    from tests.fixtures.images import png_bytes

    settings.SSE_MAX_CONNECTIONS_PER_USER = 1
    add_templates(image.dataset, 1)
    dataset_id = image.dataset.id.hex
    stream_slot_acquire(alice)  # another tab holds the only stream

    refused = [
        alice_api.post("/sam/dataset/prewarm", {"dataset_id": dataset_id}, format="json"),
        alice_api.post("/sam/dataset/apply_stream", {"dataset_id": dataset_id}, format="json"),
        alice_api.post(
            "/sam/batch_process_stream",
            {"images": [SimpleUploadedFile("a.png", png_bytes())]},
            format="multipart",
        ),
    ]

    for response in refused:
        assert response.status_code == 429, response.content[:200]
        body = response.json()
        assert body["error"] == "too_many_streams" and body["setting"] == "SSE_MAX_CONNECTIONS_PER_USER"
        assert "SSE_MAX_CONNECTIONS_PER_USER" in body["detail"]
    assert not image.dataset.jobs.exists()  # apply_stream refused before it queued a job
    stream_slot_release(alice)
    accepted = alice_api.post("/sam/dataset/prewarm", {"dataset_id": dataset_id}, format="json")
    assert accepted.status_code == 200 and accepted["Content-Type"].startswith("text/event-stream")


def _rates(settings, **rates):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
    }


@pytest.mark.parametrize("path", ["/api/auth/login/", "/admin/login/"])
def test_every_login_form_gets_the_per_ip_login_throttle(client, settings, path):
    _rates(settings, login="2/min")
    statuses = [
        client.post(path, {"username": "nobody", "password": "x"}, REMOTE_ADDR="10.5.5.5").status_code
        for _ in range(3)
    ]
    other_ip = client.post(path, {"username": "nobody", "password": "x"}, REMOTE_ADDR="10.5.5.6")

    assert statuses[:2] == [200, 200] and statuses[2] == 429
    assert other_ip.status_code == 200
    assert client.get(path).status_code in (200, 302)  # the form still renders


def test_the_preview_template_limit_applies_when_templates_are_omitted(alice_api, image, settings):
    settings.MAX_TEMPLATES_PER_PREVIEW = 2
    add_templates(image.dataset, 3)

    response = alice_api.post(f"/api/datasets/{image.dataset.id.hex}/preview/", {}, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "too_many_templates"
    assert response.json()["limit"] == "MAX_TEMPLATES_PER_PREVIEW"


def test_the_image_file_is_sent_under_its_stored_suffix_not_the_clients(alice_api, alice):
    image = DatasetImageFactory(
        dataset=DatasetFactory(owner=alice), filename="x.html", original_filename="x.html"
    )

    response = alice_api.get(f"/api/images/{image.id.hex}/file/?download=1")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert 'filename="x.png"' in response["Content-Disposition"]
    assert ".html" not in response["Content-Disposition"]


def test_the_export_and_the_zip_count_against_the_downloads_throttle(alice_api, image, settings):
    from datasets.jobs.services import job_create

    _rates(settings, downloads="1/min")
    add_templates(image.dataset, 1)
    job = job_create(dataset=image.dataset, owner=image.dataset.owner)

    first = alice_api.get(f"/api/jobs/{job.id.hex}/export/?format=coco")
    over = alice_api.get(f"/api/jobs/{job.id.hex}/export/?format=coco")
    zip_over = alice_api.get(f"/api/jobs/{job.id.hex}/download/")

    assert first.status_code == 200, first.content[:200]
    for response in (over, zip_over):
        assert response.status_code == 429 and response.json()["limit"] == "THROTTLE_DOWNLOADS"
