"""Templates: list in save order, create (defaults and validation), change, delete, ownership."""

from __future__ import annotations

import pytest

from templates_app.models import Template
from tests.fixtures.factories import DatasetFactory, DatasetImageFactory, TemplateFactory

pytestmark = pytest.mark.django_db

POINT = {"x_norm": 0.25, "y_norm": 0.75, "positive": True}


@pytest.fixture
def dataset(alice):
    return DatasetFactory(owner=alice)


def list_url(dataset) -> str:
    return f"/api/datasets/{dataset.id.hex}/templates/"


def detail_url(template) -> str:
    return f"/api/templates/{template.id.hex}/"


def create(api, dataset, **payload):
    return api.post(list_url(dataset), payload, format="json")


def test_create_with_defaults(alice_api, dataset):
    response = create(alice_api, dataset, points=[{"x_norm": "0.25", "y_norm": 0.75}])

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "Template 1" and body["position"] == 0
    assert body["points"] == [POINT] and body["points_count"] == 1
    assert body["image_class"] == "" and body["reference_image"] is None and body["default_edits"] == {}
    assert body["dataset"] == dataset.id.hex
    assert Template.objects.get(pk=body["id"]).points == [POINT]


def test_create_with_everything(alice_api, dataset):
    image = DatasetImageFactory(dataset=dataset)
    response = create(
        alice_api,
        dataset,
        name="Scratch",
        points=[POINT, {"x_norm": 0, "y_norm": 1, "positive": False}],
        image_class="fail",
        reference_image=image.id.hex,
        default_edits={"brightness": 0.2, "hue": "30", "opacity": 1, "noise": None},
    )

    body = response.json()
    assert response.status_code == 201
    assert body["name"] == "Scratch" and body["image_class"] == "fail"
    assert body["reference_image"] == image.id.hex
    assert body["points"][1] == {"x_norm": 0.0, "y_norm": 1.0, "positive": False}
    assert body["default_edits"] == {"brightness": 0.2, "hue": 30.0}  # neutral values are not stored


def test_the_list_is_in_save_order_with_default_names_counting_up(alice_api, dataset):
    for _ in range(3):
        create(alice_api, dataset, points=[POINT])
    Template.objects.get(dataset=dataset, name="Template 2").delete()
    create(alice_api, dataset, points=[POINT])

    body = alice_api.get(list_url(dataset)).json()

    assert [(t["name"], t["position"]) for t in body] == [
        ("Template 1", 0),
        ("Template 3", 2),
        ("Template 4", 3),  # a free name and the next position, never a collision
    ]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, {"error": "no_points", "field": "points"}),
        ({"points": []}, {"error": "no_points"}),
        ({"points": {"x_norm": 0.5}}, {"error": "invalid_points", "field": "points"}),
        (
            {"points": [POINT, {"x_norm": 0.5, "y_norm": -0.1}]},
            {
                "error": "invalid_points",
                "index": 1,
                "detail": "point 1: y_norm must be between 0 and 1, got -0.1",
            },
        ),
        (
            {"points": [POINT, {"x_norm": 0.5, "y_norm": 0.5, "positive": "maybe"}]},
            {"error": "invalid_points", "index": 1},
        ),
        ({"points": [{"x_norm": 0.5, "y_norm": 0.5, "positive": False}]}, {"error": "invalid_points"}),
        ({"points": [POINT], "image_class": "good"}, {"error": "validation_error"}),
        (
            {"points": [POINT], "default_edits": {"brightness": 2}},
            {"error": "invalid_edits", "field": "brightness"},
        ),
        (
            {"points": [POINT], "default_edits": {"sharpness": 1}},
            {"error": "invalid_edits", "field": "sharpness"},
        ),
        (
            {"points": [POINT], "default_edits": {"gamma": "nan"}},
            {"error": "invalid_edits", "field": "gamma"},
        ),
        ({"points": [POINT], "default_edits": [1, 2]}, {"error": "invalid_edits", "field": "edits"}),
        ({"points": [POINT], "default_edits": []}, {"error": "invalid_edits", "field": "edits"}),
        ({"points": [POINT], "reference_image": "not-an-id"}, {"error": "invalid_reference_image"}),
    ],
)
def test_create_refuses_bad_input_with_its_code(alice_api, dataset, payload, expected):
    response = create(alice_api, dataset, **payload)

    assert response.status_code == 400
    assert expected.items() <= response.json().items(), response.json()
    assert not Template.objects.exists()


def test_a_reference_image_of_another_dataset_or_user_is_refused(alice_api, dataset, alice, bob):
    mine_elsewhere = DatasetImageFactory(dataset=DatasetFactory(owner=alice))
    bobs = DatasetImageFactory(dataset=DatasetFactory(owner=bob))

    for image in (mine_elsewhere, bobs):
        response = create(alice_api, dataset, points=[POINT], reference_image=image.id.hex)
        assert response.status_code == 400
        assert response.json() == {
            "error": "invalid_reference_image",
            "detail": "the reference image must be an image of the same dataset",
            "field": "reference_image",
        }


def test_patch_changes_only_what_is_sent(alice_api, dataset):
    template = TemplateFactory(dataset=dataset, name="Old", default_edits={"brightness": 0.2})
    image = DatasetImageFactory(dataset=dataset)

    renamed = alice_api.patch(detail_url(template), {"name": "New"}, format="json").json()
    moved = alice_api.patch(
        detail_url(template),
        {"points": [{"x_norm": 0.9, "y_norm": 0.1}], "image_class": "pass", "reference_image": image.id.hex},
        format="json",
    ).json()
    edited = alice_api.patch(
        detail_url(template), {"default_edits": {"contrast": -0.5}}, format="json"
    ).json()
    cleared = alice_api.patch(
        detail_url(template), {"reference_image": None, "image_class": ""}, format="json"
    ).json()

    assert renamed["name"] == "New" and renamed["default_edits"] == {"brightness": 0.2}
    assert moved["points"] == [{"x_norm": 0.9, "y_norm": 0.1, "positive": True}] and moved["name"] == "New"
    assert (moved["image_class"], moved["reference_image"]) == ("pass", image.id.hex)
    assert edited["default_edits"] == {"contrast": -0.5}
    assert (cleared["image_class"], cleared["reference_image"]) == ("", None)
    assert alice_api.get(detail_url(template)).json() == cleared


def test_patch_refuses_bad_values(alice_api, dataset):
    template = TemplateFactory(dataset=dataset)

    blank = alice_api.patch(detail_url(template), {"name": " \t"}, format="json")
    edits = alice_api.patch(detail_url(template), {"default_edits": {"opacity": 1.01}}, format="json")
    points = alice_api.patch(detail_url(template), {"points": [{"x_norm": 2, "y_norm": 0}]}, format="json")

    assert blank.json()["error"] == "invalid_name"
    assert {"error": "invalid_edits", "field": "opacity"}.items() <= edits.json().items()
    assert {"error": "invalid_points", "index": 0}.items() <= points.json().items()
    template.refresh_from_db()
    assert template.default_edits == {"brightness": 0.2}


def test_delete(alice_api, dataset):
    template = TemplateFactory(dataset=dataset)
    assert alice_api.delete(detail_url(template)).status_code == 204
    assert not Template.objects.exists()


def test_bob_gets_404_for_every_template_endpoint_of_alice(bob_api, dataset):
    template = TemplateFactory(dataset=dataset, name="mine")

    responses = [
        bob_api.get(list_url(dataset)),
        bob_api.post(list_url(dataset), {"points": [POINT]}, format="json"),
        bob_api.get(detail_url(template)),
        bob_api.patch(detail_url(template), {"name": "stolen"}, format="json"),
        bob_api.delete(detail_url(template)),
    ]

    assert [r.status_code for r in responses] == [404] * len(responses)
    assert {r.json()["error"] for r in responses} == {"not_found"}
    template.refresh_from_db()
    assert template.name == "mine" and Template.objects.count() == 1


def test_a_label_defaults_to_the_name_is_trimmed_and_may_be_shared(alice_api, dataset):
    plain = create(alice_api, dataset, name="Pump cap", points=[POINT]).json()
    assert plain["label"] == "Pump cap" and Template.objects.get(pk=plain["id"]).label == ""
    first = create(alice_api, dataset, name="Cap left", label="  cap \n", points=[POINT]).json()
    second = create(alice_api, dataset, name="Cap right", label="cap", points=[POINT]).json()
    assert first["label"] == second["label"] == "cap"

    # Renaming a template without a label renames its category; a blank label goes back to the name.
    template = Template.objects.get(pk=plain["id"])
    assert alice_api.patch(detail_url(template), {"name": "Cap"}, format="json").json()["label"] == "Cap"
    assert alice_api.patch(detail_url(template), {"label": "lid"}, format="json").json()["label"] == "lid"
    assert alice_api.patch(detail_url(template), {"label": " "}, format="json").json()["label"] == "Cap"
    assert Template.objects.get(pk=plain["id"]).label == ""


def test_a_label_over_200_characters_is_refused(alice_api, dataset):
    response = create(alice_api, dataset, points=[POINT], label="x" * 201)
    assert response.status_code == 400 and response.json()["field"] == "label"
    assert not Template.objects.filter(dataset=dataset).exists()
    template = TemplateFactory(dataset=dataset, label="kept")
    response = alice_api.patch(detail_url(template), {"label": "y" * 201}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "label"
    template.refresh_from_db()
    assert template.label == "kept"
