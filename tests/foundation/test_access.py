"""Authentication everywhere, and the ownership accessors: other users' objects are 404."""

from __future__ import annotations

import pytest
from django.http import Http404

from datasets.selectors import (
    dataset_get_for_user,
    dataset_list_for_user,
    image_get_for_user,
    job_get_for_user,
    variant_get_for_user,
)
from legacy.selectors import legacy_session_get_for_user
from templates_app.selectors import template_get_for_user
from tests.fixtures.factories import (
    DatasetFactory,
    DatasetImageFactory,
    GenerationJobFactory,
    LegacySessionFactory,
    TemplateFactory,
    VariantFactory,
)

pytestmark = pytest.mark.django_db


def test_anonymous_pages_redirect_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_anonymous_api_requests_get_json_401(client):
    response = client.get("/api/datasets/")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_login_page_renders_a_form(client):
    response = client.get("/accounts/login/")
    body = response.content.decode()
    assert 'name="username"' in body and 'name="password"' in body


def test_login_with_a_password_reaches_the_datasets_page(client, alice):
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "correct horse battery staple"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/"
    assert "Datasets" in response.content.decode()


def test_token_endpoint_returns_a_working_token(client, alice):
    DatasetFactory(owner=alice, name="Alice's")
    response = client.post(
        "/api/auth/token/", {"username": "alice", "password": "correct horse battery staple"}
    )
    token = response.json()["token"]
    authed = client.get("/api/datasets/", HTTP_AUTHORIZATION=f"Token {token}")
    assert [row["name"] for row in authed.json()["results"]] == ["Alice's"]


def test_alice_cannot_reach_bobs_dataset(alice, bob):
    bobs = DatasetFactory(owner=bob)
    assert dataset_get_for_user(user=bob, dataset_id=bobs.id.hex) == bobs
    with pytest.raises(Http404):
        dataset_get_for_user(user=alice, dataset_id=bobs.id.hex)
    assert list(dataset_list_for_user(user=alice)) == []


def test_malformed_ids_are_404_not_500(alice):
    for bad in ("not-a-uuid", "", None, "1234", "../etc/passwd"):
        with pytest.raises(Http404):
            dataset_get_for_user(user=alice, dataset_id=bad)


def test_every_accessor_hides_foreign_objects(alice, bob):
    dataset = DatasetFactory(owner=bob)
    image = DatasetImageFactory(dataset=dataset)
    template = TemplateFactory(dataset=dataset)
    job = GenerationJobFactory(dataset=dataset)
    variant = VariantFactory(job=job, image=image)
    session = LegacySessionFactory(owner=bob)
    checks = [
        (image_get_for_user, {"image_id": image.id}),
        (template_get_for_user, {"template_id": template.id}),
        (job_get_for_user, {"job_id": job.id}),
        (variant_get_for_user, {"variant_id": variant.id}),
        (legacy_session_get_for_user, {"session_id": session.id}),
    ]
    for accessor, kwargs in checks:
        assert accessor(user=bob, **kwargs) is not None
        with pytest.raises(Http404):
            accessor(user=alice, **kwargs)


def test_dataset_list_counts_and_last_job(alice):
    dataset = DatasetFactory(owner=alice)
    DatasetImageFactory.create_batch(3, dataset=dataset)
    TemplateFactory(dataset=dataset)
    GenerationJobFactory(dataset=dataset, status="succeeded")
    row = dataset_list_for_user(user=alice).get()
    assert (row.image_count, row.template_count, row.job_count) == (3, 1, 1)
    assert row.last_job_status == "succeeded"
