"""Scoped throttles on uploads and previews (shared cache), and the OpenAPI schema of the whole project."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from tests.fixtures.factories import DatasetImageFactory
from tests.fixtures.images import png_bytes
from tests.fixtures.uploads import post_upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def tight_rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"uploads": "2/min", "previews": "3/min"},
    }


def test_uploads_are_throttled_per_user(alice_api, bob_api, alice_dataset, bob_dataset, tight_rates):
    statuses = [
        post_upload(alice_api, alice_dataset, [(f"{i}.png", png_bytes(seed=i))]).status_code for i in range(3)
    ]
    throttled = post_upload(alice_api, alice_dataset, [("x.png", png_bytes(seed=9))])

    assert statuses == [201, 201, 429]
    assert throttled.json()["error"] == "throttled" and "Retry-After" in throttled
    assert (
        post_upload(bob_api, bob_dataset, [("b.png", png_bytes(seed=1))]).status_code == 201
    )  # bob's own budget
    assert alice_api.get(f"/api/datasets/{alice_dataset.id.hex}/images/").status_code == 200  # listing is not


def test_segment_previews_are_throttled(alice_api, alice_dataset, tight_rates):
    image = DatasetImageFactory(dataset=alice_dataset)
    url = f"/api/images/{image.id.hex}/segment/"
    statuses = [
        alice_api.post(url, {"points": [{"x_norm": 0.4, "y_norm": 0.4}]}, format="json").status_code
        for _ in range(4)
    ]

    assert statuses == [200, 200, 200, 429]
    assert alice_api.get(f"/api/images/{image.id.hex}/").status_code == 200


def test_the_throttle_counters_live_in_the_shared_cache(settings):
    # Per-process memory would let every worker grant the full rate: the cache must be a shared backend.
    assert settings.CACHES["default"]["BACKEND"] in (
        "django.core.cache.backends.db.DatabaseCache",
        "django.core.cache.backends.redis.RedisCache",
    )


def test_the_openapi_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    schema = target.read_text()
    for path in (
        "/api/datasets/{dataset_id}/images/",
        "/api/images/{image_id}/segment/",
        "/api/images/{image_id}/file/",
        "/api/datasets/{dataset_id}/templates/",
        "/api/templates/{template_id}/",
        "/api/datasets/{dataset_id}/preview/",
        "/api/datasets/{dataset_id}/prewarm/",
    ):
        assert f"  {path}:" in schema
    assert "multipart/form-data" in schema and "format: binary" in schema


def test_the_dataset_and_template_views_add_no_schema_warnings(tmp_path, capsys):
    """The part of the schema this app owns stays clean even while other apps' views are in progress."""
    call_command("spectacular", "--validate", "--file", str(tmp_path / "schema.yml"))

    emitted = capsys.readouterr().err.splitlines()
    mine = ("datasets/api.py", "datasets/views.py", "datasets/serializers.py", "templates_app/")
    assert [line for line in emitted if any(name in line for name in mine)] == []
    assert not [
        line for line in emitted if line.startswith("Warning") and "collision" in line and "compose" in line
    ]
