"""The templates page's box prompt, mask choice and model select (server side; the canvas is in tests/browser)."""

from __future__ import annotations

import json
import shutil

import pytest
from django.urls import reverse

from templates_app.models import Template

pytestmark = pytest.mark.django_db


def test_the_segment_endpoint_takes_a_box_alone(alice_client, alice_dataset, alice_images):
    image = alice_images[0]
    url = reverse("ui-image-segment", args=[alice_dataset.public_id, image.public_id])
    response = alice_client.post(
        url, json.dumps({"points": [], "box": [0.2, 0.2, 0.8, 0.8]}), content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["candidates"]
    bad = alice_client.post(url, json.dumps({"box": [0.2, 0.2, 0.2, 0.8]}), content_type="application/json")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_box"


def test_saving_a_box_and_a_choice_then_the_page_shows_them(alice_client, alice_dataset, alice_images):
    url = reverse("ui-template-save", args=[alice_dataset.public_id])
    alice_client.post(
        url,
        {"points": "[]", "box": "[0.1, 0.2, 0.6, 0.7]", "mask_choice": "2", "name": "Box"},
        follow=True,
    )
    template = Template.objects.get(dataset=alice_dataset)
    assert template.box == [0.1, 0.2, 0.6, 0.7] and template.mask_choice == "2" and template.points == []
    page = reverse("ui-templates", args=[alice_dataset.public_id])
    body = alice_client.get(page, {"template": template.public_id}).content.decode()
    assert '<option value="2" selected>' in body and "[0.1, 0.2, 0.6, 0.7]" in body
    assert 'data-point-mode="box"' in body

    response = alice_client.post(url, {"points": "[]", "box": "[0.1, 0.2, 2, 0.7]"}, follow=True)
    assert "The template was not saved" in response.content.decode()
    assert Template.objects.filter(dataset=alice_dataset).count() == 1


@pytest.fixture
def two_models(settings, tmp_path, tiny_sam_checkpoint):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_sam_checkpoint, folder / "one.pth")
    shutil.copy(tiny_sam_checkpoint, folder / "two.pth")
    settings.SAM_BACKEND = "auto"
    settings.SAM_MODELS_DIR = folder
    return folder


def test_the_model_select_sets_the_datasets_checkpoint(alice_client, alice_dataset, alice_images, two_models):
    page = reverse("ui-templates", args=[alice_dataset.public_id])
    assert 'id="dataset-model"' in alice_client.get(page).content.decode()
    url = reverse("ui-dataset-model", args=[alice_dataset.public_id])

    alice_client.post(url, {"checkpoint": "two.pth"})
    alice_dataset.refresh_from_db()
    assert alice_dataset.checkpoint == "two.pth"
    response = alice_client.post(url, {"checkpoint": "three.pth"}, follow=True)
    assert "The model was not changed" in response.content.decode()
    alice_dataset.refresh_from_db()
    assert alice_dataset.checkpoint == "two.pth"


def test_bob_cannot_set_alices_model(bob_client, alice_dataset, two_models):
    response = bob_client.post(
        reverse("ui-dataset-model", args=[alice_dataset.public_id]), {"checkpoint": "two.pth"}
    )
    assert response.status_code == 404
    alice_dataset.refresh_from_db()
    assert alice_dataset.checkpoint == ""
