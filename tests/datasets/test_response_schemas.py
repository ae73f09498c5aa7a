"""The bodies of the preview endpoints carry exactly the fields their OpenAPI schema documents (the views
render them through the documented serializers, so the two cannot drift)."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from tests.fixtures.factories import TemplateFactory
from tests.fixtures.uploads import post_upload

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def _documented(schema: dict, path: str) -> dict:
    """The properties of the JSON 200 response of ``POST path``, with ``$ref``s resolved."""
    content = schema["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    return _resolve(schema, content)["properties"]


def _resolve(schema: dict, node: dict) -> dict:
    if "$ref" in node:
        return schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _item_fields(schema: dict, array_property: dict) -> set[str]:
    return set(_resolve(schema, array_property["items"])["properties"])


@pytest.fixture
def coffee(alice_api, alice_dataset, photo_png):
    assert post_upload(alice_api, alice_dataset, [("coffee.png", photo_png["coffee"])]).status_code == 201
    return alice_dataset.images.get()


def test_the_segment_body_has_the_documented_fields(schema, alice_api, coffee):
    response = alice_api.post(
        f"/api/images/{coffee.id.hex}/segment/",
        {"points": [{"x_norm": 0.45, "y_norm": 0.45, "positive": True}]},
        format="json",
    )

    assert response.status_code == 200, response.content
    documented = _documented(schema, "/api/images/{image_id}/segment/")
    body = response.json()
    assert set(body) == set(documented)
    assert body["candidates"]
    assert {frozenset(c) for c in body["candidates"]} == {
        frozenset(_item_fields(schema, documented["candidates"]))
    }


def test_the_edit_preview_body_has_the_documented_fields(schema, alice_api, alice_dataset, coffee):
    TemplateFactory(dataset=alice_dataset, points=[{"x_norm": 0.45, "y_norm": 0.45, "positive": True}])
    response = alice_api.post(f"/api/datasets/{alice_dataset.id.hex}/preview/", {}, format="json")

    assert response.status_code == 200, response.content
    assert set(response.json()) == set(_documented(schema, "/api/datasets/{dataset_id}/preview/"))


def test_the_prewarm_body_has_the_documented_fields(schema, alice_api, alice_dataset, coffee):
    response = alice_api.post(f"/api/datasets/{alice_dataset.id.hex}/prewarm/", {}, format="json")

    assert response.status_code == 200, response.content
    documented = _documented(schema, "/api/datasets/{dataset_id}/prewarm/")
    body = response.json()
    assert set(body) == set(documented)
    assert [set(row) for row in body["images"]] == [_item_fields(schema, documented["images"])]
