"""The seed API's template save takes an optional box (and mask choice) beside its old fields."""

from __future__ import annotations

import pytest

from templates_app.models import Template
from tests.fixtures.seed_api import init_dataset, post_json

pytestmark = pytest.mark.django_db


def test_template_save_with_a_box(alice_api, photo_files):
    dataset = init_dataset(alice_api, photo_files, names=["chelsea.png"])["dataset_id"]
    response = post_json(
        alice_api,
        "/sam/dataset/template/save",
        {"dataset_id": dataset, "points": [], "box": [0.2, 0.3, 0.7, 0.9], "mask_choice": 1, "name": "cat"},
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["box"] == [0.2, 0.3, 0.7, 0.9] and body["mask_choice"] == "1" and body["count"] == 0
    template = Template.objects.get(pk=body["id"])
    assert template.box == [0.2, 0.3, 0.7, 0.9] and template.name == "cat"


def test_old_clients_without_a_box_are_unchanged(alice_api, photo_files):
    dataset = init_dataset(alice_api, photo_files, names=["chelsea.png"])["dataset_id"]
    body = post_json(
        alice_api,
        "/sam/dataset/template/save",
        {"dataset_id": dataset, "points": [{"x_norm": 0.5, "y_norm": 0.55}]},
    ).json()
    assert body["box"] is None and body["mask_choice"] == "best" and body["count"] == 1


def test_a_bad_box_is_refused_and_saves_nothing(alice_api, photo_files):
    dataset = init_dataset(alice_api, photo_files, names=["chelsea.png"])["dataset_id"]
    response = post_json(
        alice_api,
        "/sam/dataset/template/save",
        {"dataset_id": dataset, "points": [{"x_norm": 0.5, "y_norm": 0.5}], "box": [0.5, 0.5, 2, 1]},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_box"
    assert not Template.objects.exists()
