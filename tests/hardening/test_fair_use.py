"""Throttles shared by every interface, the login lockout, and the login's local-only ``next``."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.fixtures.factories import DatasetFactory, DatasetImageFactory, TemplateFactory, UserFactory
from tests.fixtures.images import png_bytes

pytestmark = pytest.mark.django_db

POINT = {"x_norm": 0.4, "y_norm": 0.4, "positive": True}
PASSWORD = "correct horse battery staple"  # UserFactory's


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def rates(settings):
    def set_rates(**rates):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {
                **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                **rates,
            },
        }

    return set_rates


@pytest.fixture
def image(alice):
    return DatasetImageFactory(dataset=DatasetFactory(owner=alice))


def test_the_pages_and_the_api_share_the_preview_budget(alice_api, alice_client, bob, bob_api, image, rates):
    rates(previews="3/min")
    dataset = image.dataset
    template = TemplateFactory(dataset=dataset)
    api = [
        alice_api.post(f"/api/images/{image.id.hex}/segment/", {"points": [POINT]}, format="json").status_code
        for _ in range(2)
    ]
    page = alice_client.post(
        f"/datasets/{dataset.id.hex}/images/{image.id.hex}/segment/",
        {"points": [POINT]},
        content_type="application/json",
    )
    over_page = alice_client.get(f"/datasets/{dataset.id.hex}/templates/{template.id.hex}/mask.png")
    over_seed = alice_api.post(
        "/sam/dataset/point_preview",
        {"dataset_id": dataset.id.hex, "image_id": image.id.hex, "points": [POINT]},
        format="json",
    )

    assert api == [200, 200] and page.status_code == 200
    assert over_page.status_code == 429
    assert over_page.json()["error"] == "throttled" and over_page.json()["limit"] == "THROTTLE_PREVIEWS"
    assert "Retry-After" in over_page
    assert over_seed.status_code == 429 and over_seed.json()["limit"] == "THROTTLE_PREVIEWS"
    other = DatasetImageFactory(dataset=DatasetFactory(owner=bob))  # bob's budget is his own
    assert (
        bob_api.post(f"/api/images/{other.id.hex}/segment/", {"points": [POINT]}, format="json").status_code
        == 200
    )


def test_page_uploads_count_against_the_upload_budget(alice_api, alice_client, image, rates):
    rates(uploads="1/min")
    first = alice_api.post(
        f"/api/datasets/{image.dataset.id.hex}/images/",
        {"images": [SimpleUploadedFile("a.png", png_bytes(seed=11))]},
        format="multipart",
    )
    page = alice_client.post(
        f"/datasets/{image.dataset.id.hex}/upload/",
        {"images": [SimpleUploadedFile("b.png", png_bytes(seed=12))]},
    )

    assert first.status_code == 201
    assert page.status_code == 429 and page.json()["limit"] == "THROTTLE_UPLOADS"
    assert (
        alice_client.get(f"/datasets/{image.dataset.id.hex}/upload/").status_code == 200
    )  # the page renders


def test_seed_precompute_prewarm_and_apply_stream_are_throttled(alice_api, image, rates):
    rates(uploads="1/min", jobs="0/min")
    dataset_id = image.dataset.id.hex
    TemplateFactory(dataset=image.dataset)

    first = alice_api.post("/sam/dataset/precompute", {"dataset_id": dataset_id}, format="json")
    prewarm = alice_api.post("/sam/dataset/prewarm", {"dataset_id": dataset_id}, format="json")
    apply = alice_api.post("/sam/dataset/apply_stream", {"dataset_id": dataset_id}, format="json")

    assert first.status_code == 200
    assert prewarm.status_code == 429 and prewarm.json()["limit"] == "THROTTLE_UPLOADS"
    assert apply.status_code == 429 and apply.json()["limit"] == "THROTTLE_JOBS"


def test_page_job_creation_and_retry_are_throttled(alice_client, image, rates):
    rates(jobs="0/min")
    TemplateFactory(dataset=image.dataset)

    response = alice_client.post(f"/datasets/{image.dataset.id.hex}/generate/", {"compose": "stack"})

    assert response.status_code == 429 and response.json()["limit"] == "THROTTLE_JOBS"
    assert not image.dataset.jobs.exists()


# --- login and tokens ---------------------------------------------------------------------------------------


def _token(client, username, password, ip="10.0.0.1"):
    return client.post(
        "/api/auth/token/", {"username": username, "password": password}, format="json", REMOTE_ADDR=ip
    )


def test_failed_token_logins_lock_the_username_from_that_ip(settings):
    from rest_framework.test import APIClient

    settings.LOGIN_FAILURE_LIMIT = 3
    UserFactory(username="carol")
    client = APIClient()

    failures = [_token(client, "carol", "wrong").status_code for _ in range(3)]
    locked = _token(client, "carol", PASSWORD)
    elsewhere = _token(client, "carol", PASSWORD, ip="10.0.0.2")

    assert failures == [400, 400, 400]
    assert locked.status_code == 429
    assert locked.json()["error"] == "locked_out" and locked.json()["limit"] == "LOGIN_FAILURE_LIMIT"
    assert "token" not in locked.json()
    assert elsewhere.status_code == 200 and elsewhere.json()["token"]


def test_an_ip_failing_across_usernames_is_locked_out(settings):
    from rest_framework.test import APIClient

    settings.LOGIN_FAILURE_LIMIT = 1
    UserFactory(username="dave")
    client = APIClient()
    for name in ("u1", "u2", "u3", "u4"):  # 4x the limit, each username once
        _token(client, name, "wrong")

    assert _token(client, "dave", PASSWORD).status_code == 429
    assert _token(client, "dave", PASSWORD, ip="10.9.9.9").status_code == 200


def test_the_token_endpoint_is_throttled_per_ip(rates):
    from rest_framework.test import APIClient

    rates(login="2/min")
    client = APIClient()
    statuses = [_token(client, "nobody", "x").status_code for _ in range(3)]
    other_ip = _token(client, "nobody", "x", ip="10.0.0.7")

    assert statuses == [400, 400, 429]
    assert other_ip.status_code == 400


def test_the_login_page_locks_out_too(client, settings):
    settings.LOGIN_FAILURE_LIMIT = 2
    UserFactory(username="erin")
    for _ in range(2):
        client.post("/accounts/login/", {"username": "erin", "password": "wrong"})

    locked = client.post("/accounts/login/", {"username": "erin", "password": PASSWORD})

    assert locked.status_code == 429
    assert "too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example"])
def test_the_login_next_must_be_a_local_url(client, target):
    UserFactory(username="frank")

    response = client.post(
        f"/accounts/login/?next={target}", {"username": "frank", "password": PASSWORD, "next": target}
    )

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_the_login_next_keeps_a_local_url(client):
    UserFactory(username="gina")

    response = client.post(
        "/accounts/login/", {"username": "gina", "password": PASSWORD, "next": "/datasets/x/"}
    )

    assert response.status_code == 302 and response["Location"] == "/datasets/x/"


def test_the_rename_form_does_not_redirect_off_site(alice_client, alice):
    dataset = DatasetFactory(owner=alice)

    response = alice_client.post(
        f"/datasets/{dataset.id.hex}/rename/", {"name": "renamed", "next": "https://evil.example/"}
    )

    assert response.status_code == 302
    assert response["Location"] == f"/datasets/{dataset.id.hex}/upload/"
