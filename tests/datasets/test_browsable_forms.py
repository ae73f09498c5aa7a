"""The browsable API's POST/PATCH forms show the fields each endpoint reads (its input serializer), not the
fields of the response it renders; the responses themselves and the OpenAPI schema are unchanged."""

from __future__ import annotations

import pytest

from tests.fixtures.factories import DatasetImageFactory, TemplateFactory

pytestmark = pytest.mark.django_db

HTML = {"HTTP_ACCEPT": "text/html"}


def _form_fields(html: str) -> set[str]:
    import re

    return set(re.findall(r'<(?:input|select|textarea)[^>]*\bname="([^"]+)"', html))


def test_dataset_list_post_form_has_the_input_fields(alice_client):
    response = alice_client.get("/api/datasets/", **HTML)
    assert response.status_code == 200
    fields = _form_fields(response.content.decode())
    assert {"name", "checkpoint"} <= fields
    assert "template_count" not in fields and "id" not in fields


def test_dataset_detail_form_and_images_upload_form(alice_client, alice_dataset):
    html = alice_client.get(f"/api/datasets/{alice_dataset.id.hex}/", **HTML).content.decode()
    assert {"name", "checkpoint"} <= _form_fields(html)
    html = alice_client.get(f"/api/datasets/{alice_dataset.id.hex}/images/", **HTML).content.decode()
    assert {"images", "zip"} & _form_fields(html)
    # the JSON answers are the output serializers', as before
    body = alice_client.get(f"/api/datasets/{alice_dataset.id.hex}/").json()
    assert body["name"] == alice_dataset.name and "id" in body


def test_template_forms_have_the_input_fields(alice_client, alice_dataset):
    image = DatasetImageFactory(dataset=alice_dataset)
    template = TemplateFactory(dataset=alice_dataset, reference_image=image)
    html = alice_client.get(f"/api/datasets/{alice_dataset.id.hex}/templates/", **HTML).content.decode()
    assert {"name", "image_class", "reference_image"} <= _form_fields(html)
    # PATCH-only endpoints get the raw-data form: its JSON is the input's fields, not the response's
    content = _raw_content(alice_client.get(f"/api/templates/{template.id.hex}/", **HTML).content.decode())
    assert {"name", "points", "image_class", "default_edits"} <= set(content) and "id" not in content
    content = _raw_content(alice_client.get(f"/api/images/{image.id.hex}/", **HTML).content.decode())
    assert set(content) == {"image_class"}


def _raw_content(page: str) -> dict:
    import html
    import json
    import re

    match = re.search(r'<textarea[^>]*name="_content"[^>]*>(.*?)</textarea>', page, re.S)
    return json.loads(html.unescape(match.group(1)))
