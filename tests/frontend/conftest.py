"""Fixtures of the page tests: a dataset of real photos uploaded through the upload service, and templates."""

from __future__ import annotations

import pytest

from tests.fixtures.factories import upload_photos


@pytest.fixture
def alice_dataset(alice):
    from datasets.services.datasets import dataset_create

    return dataset_create(owner=alice, name="Alice photos")


@pytest.fixture
def alice_images(alice_dataset, photo_png_half):
    return upload_photos(alice_dataset, photo_png_half)


@pytest.fixture
def alice_template(alice_dataset, alice_images):
    from templates_app.services import template_create

    return template_create(
        dataset=alice_dataset,
        points=[{"x_norm": 0.5, "y_norm": 0.35, "positive": True}],
        name="Face",
        reference_image=alice_images[0],
        default_edits={"brightness": 0.3},
    )


@pytest.fixture
def bob_dataset(bob, photo_png_half):
    from datasets.services.datasets import dataset_create
    from templates_app.services import template_create

    dataset = dataset_create(owner=bob, name="Bob private")
    images = upload_photos(dataset, photo_png_half, names=("coffee",))
    template_create(
        dataset=dataset, points=[{"x_norm": 0.5, "y_norm": 0.5, "positive": True}], reference_image=images[0]
    )
    return dataset
