"""Bodies: deep JSON is a 400 JSON error everywhere; oversize bodies are refused before they are read (ASGI);
every error on an API path is JSON."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.fixtures.factories import DatasetImageFactory

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000  # RecursionError in Python's json before the fix: a 500 (a debug page with DEBUG on)


@pytest.fixture
def image(alice):
    from tests.fixtures.factories import DatasetFactory

    return DatasetImageFactory(dataset=DatasetFactory(owner=alice))


def test_deep_json_to_the_segment_endpoint_is_a_400_json_error(alice_api, image):
    response = alice_api.post(f"/api/images/{image.id.hex}/segment/", DEEP, content_type="application/json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "parse_error" and "nested" in response.json()["detail"]


def test_json_nested_past_the_limit_but_not_past_python_is_refused_too(alice_api, image, settings):
    settings.MAX_JSON_DEPTH = 8
    body = {"points": [{"x_norm": 0.5, "y_norm": 0.5}], "extra": json.loads("[" * 10 + "]" * 10)}

    response = alice_api.post(f"/api/images/{image.id.hex}/segment/", body, format="json")

    assert response.status_code == 400
    assert "MAX_JSON_DEPTH" in response.json()["detail"]


def test_deep_json_to_the_seed_api_and_the_page_endpoint_is_a_400_json_error(alice_api, alice_client, image):
    seed = alice_api.post("/sam/dataset/point_preview", DEEP, content_type="application/json")
    page = alice_client.post(
        f"/datasets/{image.dataset.id.hex}/images/{image.id.hex}/segment/",
        DEEP,
        content_type="application/json",
    )

    assert seed.status_code == 400 and seed.json()["error"] == "invalid_json"
    assert page.status_code == 400 and page.json()["error"] == "invalid_json"


def test_malformed_json_in_the_batch_edits_field_is_a_400(alice_api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.fixtures.images import png_bytes

    response = alice_api.post(
        "/sam/batch_process",
        {"images": [SimpleUploadedFile("a.png", png_bytes())], "edits": DEEP},
        format="multipart",
    )

    assert response.status_code == 400 and response.json()["error"] == "invalid edits JSON"


def test_errors_on_api_paths_are_json_not_html(alice_api, alice_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    missing = alice_api.get("/api/no-such-thing/")
    too_big_form = alice_client.post("/api/datasets/", {"name": "x" * 5000})

    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert too_big_form.status_code == 413
    assert too_big_form["Content-Type"].startswith("application/json")
    assert "error" in too_big_form.json()


# --- the ASGI guard ---------------------------------------------------------------------------------------


def _asgi_call(app, *, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]):
    """Drive ``app`` with one HTTP request; returns (status, body, how many chunks the app pulled)."""
    pulled = {"n": 0}
    sent: list[dict] = []

    async def receive():
        if pulled["n"] < len(chunks):
            chunk = chunks[pulled["n"]]
            pulled["n"] += 1
            return {"type": "http.request", "body": chunk, "more_body": pulled["n"] < len(chunks)}
        await asyncio.sleep(3600)  # a client that never sends more

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, pulled["n"]


def test_a_declared_oversize_body_is_refused_before_a_byte_is_read():
    from samsite.asgi import application

    status, body, pulled = _asgi_call(
        application,
        path="/api/auth/token/",
        headers=[
            (b"content-length", str(300 * 1024 * 1024).encode()),
            (b"content-type", b"application/json"),
        ],
        chunks=[b"x" * 1024],
    )

    assert status == 413 and pulled == 0
    assert json.loads(body) == {
        "error": "request_too_large",
        "detail": "the request body exceeds the 16 MB limit (MAX_REQUEST_BODY_MB)",
        "limit": "MAX_REQUEST_BODY_MB",
        "max_bytes": 16 * 1024 * 1024,
    }


def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_limit(settings):
    from samsite.asgi import application

    settings.MAX_REQUEST_BODY_MB = 1
    chunk = b"x" * (256 * 1024)

    status, body, pulled = _asgi_call(
        application,
        path="/api/auth/token/",
        headers=[(b"content-type", b"application/json")],
        chunks=[chunk] * 40,
    )

    assert status == 413 and json.loads(body)["limit"] == "MAX_REQUEST_BODY_MB"
    assert pulled == 5  # 1.25 MiB read of the 10 MiB sent: nothing past the limit was spooled


def test_upload_paths_get_the_upload_limit(settings):
    from samsite.asgi_limits import body_limit

    settings.MAX_REQUEST_BODY_MB, settings.MAX_UPLOAD_REQUEST_MB = 2, 300

    for path in (
        "/api/datasets/0f0f/images/",
        "/sam/init",
        "/api/sam/dataset/init",
        "/sam/batch_process_stream/",
        "/datasets/abc/upload/",
    ):
        assert body_limit(path) == (300 * 1024 * 1024, "MAX_UPLOAD_REQUEST_MB"), path
    for path in ("/api/auth/token/", "/api/datasets/", "/sam/segment", "/accounts/login/"):
        assert body_limit(path) == (2 * 1024 * 1024, "MAX_REQUEST_BODY_MB"), path
