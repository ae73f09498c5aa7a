"""``GET /api/``: the API root lists every endpoint group; anonymous callers get a 401 JSON error."""

from __future__ import annotations

import pytest
from django.urls import resolve, reverse

from samsite.api_root import GROUPS

pytestmark = pytest.mark.django_db

EXPECTED_GROUPS = {"auth", "datasets", "images", "templates", "previews", "jobs", "results", "schema", "seed"}


def test_anonymous_gets_401_json(client):
    response = client.get("/api/", HTTP_ACCEPT="application/json")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] and body["detail"]
    assert response["WWW-Authenticate"].startswith("Token")


def test_with_a_token_every_endpoint_group_is_listed(alice_api):
    response = alice_api.get("/api/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    groups = response.json()["groups"]
    assert set(groups) == EXPECTED_GROUPS
    paths = {e["path"] for group in groups.values() for e in group["endpoints"]}
    for expected in (
        "/api/datasets/",
        "/api/datasets/{id}/",
        "/api/datasets/{id}/images/",
        "/api/images/{id}/segment/",
        "/api/datasets/{id}/jobs/",
        "/api/jobs/",
        "/api/jobs/{id}/events/",
        "/api/jobs/{id}/download/",
        "/api/variants/{id}/file/",
        "/api/auth/token/",
        "/api/schema/",
    ):
        assert expected in paths, expected
    # Links are absolute and only given where they need no id.
    jobs = {e["path"]: e for e in groups["jobs"]["endpoints"]}
    assert jobs["/api/jobs/"]["url"] == "http://testserver/api/jobs/"
    assert "url" not in jobs["/api/jobs/{id}/"]


def test_every_listed_route_resolves():
    for _description, routes in GROUPS.values():
        for _methods, name, params in routes:
            if name.startswith("/"):
                assert resolve(name).route.startswith("api/")
                continue
            path = reverse(name, args=["0" * 32] * len(params))
            assert resolve(path).url_name == name


def test_browser_gets_the_browsable_api_with_login_links(alice_client):
    response = alice_client.get("/api/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    body = response.content.decode()
    assert "SAM Bulk Dataset Generator API" in body
    assert reverse("rest_framework:logout") in body  # the browsable API's log out link
    login = alice_client.get(reverse("rest_framework:login"))
    assert login.status_code == 200 and b'name="username"' in login.content
