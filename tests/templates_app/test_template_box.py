"""Templates with a box prompt and a mask choice: REST API validation, box-only templates, PATCH rules."""

from __future__ import annotations

import pytest

from templates_app.models import Template
from tests.fixtures.factories import DatasetFactory, TemplateFactory

pytestmark = pytest.mark.django_db

POINT = {"x_norm": 0.25, "y_norm": 0.75, "positive": True}
NEGATIVE = {"x_norm": 0.5, "y_norm": 0.5, "positive": False}


@pytest.fixture
def dataset(alice):
    return DatasetFactory(owner=alice)


def create(api, dataset, **payload):
    return api.post(f"/api/datasets/{dataset.id.hex}/templates/", payload, format="json")


def patch(api, template, **payload):
    return api.patch(f"/api/templates/{template.id.hex}/", payload, format="json")


def test_a_box_and_a_mask_choice_are_stored_and_returned(alice_api, dataset):
    # Corners in any order (a drag to the upper left) are sorted.
    response = create(alice_api, dataset, points=[POINT], box=[0.8, 0.9, 0.1, 0.2], mask_choice=2)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["box"] == [0.1, 0.2, 0.8, 0.9] and body["mask_choice"] == "2"
    stored = Template.objects.get(pk=body["id"])
    assert stored.box == [0.1, 0.2, 0.8, 0.9] and stored.mask_choice == "2"
    assert stored.points == [POINT]


def test_a_box_alone_or_with_negative_points_is_a_template(alice_api, dataset):
    alone = create(alice_api, dataset, box=[0.1, 0.1, 0.5, 0.5])
    refined = create(alice_api, dataset, box=[0.1, 0.1, 0.5, 0.5], points=[NEGATIVE])

    assert alone.status_code == refined.status_code == 201, (alone.content, refined.content)
    assert alone.json()["points"] == [] and alone.json()["mask_choice"] == "best"
    assert refined.json()["points"] == [NEGATIVE]


def test_defaults_are_no_box_and_the_best_candidate(alice_api, dataset):
    body = create(alice_api, dataset, points=[POINT]).json()
    assert body["box"] is None and body["mask_choice"] == "best"


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({"points": [POINT], "box": [0.1, 0.2, 0.3]}, "invalid_box", "box"),
        ({"points": [POINT], "box": [0.1, 0.2, 1.3, 0.4]}, "invalid_box", "box"),
        ({"points": [POINT], "box": [0.1, 0.2, 0.1, 0.4]}, "invalid_box", "box"),  # zero width
        ({"points": [POINT], "box": "0.1,0.2,0.3,0.4"}, "invalid_box", "box"),
        ({"points": [POINT], "box": [0.1, "x", 0.3, 0.4]}, "invalid_box", "box"),
        ({"points": [POINT], "mask_choice": 3}, "invalid_mask_choice", "mask_choice"),
        ({"points": [POINT], "mask_choice": "largest"}, "invalid_mask_choice", "mask_choice"),
        ({"points": [NEGATIVE]}, "invalid_points", "points"),  # no box: a positive point is required
        ({}, "no_points", "points"),
    ],
)
def test_bad_boxes_and_choices_are_400_naming_the_field(alice_api, dataset, payload, code, field):
    response = create(alice_api, dataset, **payload)

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == code and body["field"] == field and body["detail"]
    assert not dataset.templates.exists(), "a refused template saves nothing"


def test_patch_sets_and_removes_the_box_and_keeps_the_rule(alice_api, dataset):
    template = TemplateFactory(dataset=dataset, points=[POINT])

    boxed = patch(alice_api, template, box=[0.2, 0.2, 0.6, 0.7], mask_choice="1")
    assert boxed.status_code == 200 and boxed.json()["box"] == [0.2, 0.2, 0.6, 0.7]
    assert boxed.json()["mask_choice"] == "1"
    box_only = patch(alice_api, template, points=[])
    assert box_only.status_code == 200 and box_only.json()["points"] == []
    # Removing the box of a template without a positive point would leave no prompt.
    refused = patch(alice_api, template, box=None)
    assert refused.status_code == 400 and refused.json()["error"] == "no_points"
    template.refresh_from_db()
    assert template.box == [0.2, 0.2, 0.6, 0.7] and template.points == [] and template.mask_choice == "1"
    bad = patch(alice_api, template, box=[2, 0, 0, 1])
    assert bad.status_code == 400 and bad.json()["field"] == "box"


def test_bob_cannot_change_alices_box(bob_api, dataset):
    template = TemplateFactory(dataset=dataset, points=[POINT])
    response = patch(bob_api, template, box=[0.1, 0.1, 0.2, 0.2])
    assert response.status_code == 404
    template.refresh_from_db()
    assert template.box is None
