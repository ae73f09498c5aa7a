"""One content negotiation (``samsite.common.api.LenientContentNegotiation``) for the file views, the edit
preview and the seed-compatible API: never a 406 or a 404 before the view runs."""

from __future__ import annotations

import pytest

from tests.fixtures.factories import DatasetFactory

pytestmark = pytest.mark.django_db


def test_the_seed_api_answers_json_whatever_the_accept_header(alice, alice_api):
    dataset = DatasetFactory(owner=alice)
    response = alice_api.get(
        "/sam/dataset/templates", {"dataset_id": dataset.id.hex}, HTTP_ACCEPT="text/event-stream"
    )

    assert response.status_code == 200 and response.json() == {"templates": []}


def test_an_unknown_format_override_is_ignored_by_the_seed_api_as_by_the_file_views(alice, alice_api):
    """The seed API's copy answered an unknown ``?format=`` with 404 ``not_found``; the file views' copy
    ignored it. One class now: the seed API ignores it too."""
    dataset = DatasetFactory(owner=alice)
    response = alice_api.get("/sam/dataset/templates", {"dataset_id": dataset.id.hex, "format": "xml"})

    assert response.status_code == 200 and response.json() == {"templates": []}


def test_a_file_view_error_is_json_even_for_an_image_accept_header(alice_api):
    response = alice_api.get(f"/api/images/{'0' * 32}/file/", HTTP_ACCEPT="image/png")

    assert response.status_code == 404 and response.json()["error"] == "not_found"
