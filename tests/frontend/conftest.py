"""Fixtures of the page tests: a dataset of real photos uploaded through the upload service, and templates."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image


def upload_photos(dataset, photo_png, names=("astronaut", "coffee", "chelsea")):
    from datasets.services.uploads import images_upload

    files = [
        SimpleUploadedFile(f"{name}_pass.png", photo_png[name], content_type="image/png") for name in names
    ]
    return images_upload(dataset=dataset, files=files).created


@pytest.fixture(scope="session")
def small_png(photos) -> dict[str, bytes]:
    """The real photos at a quarter of their pixels: same content, faster segmentation in page tests."""
    out = {}
    for name, array in photos.items():
        image = Image.fromarray(array)
        image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out[name] = buffer.getvalue()
    return out


@pytest.fixture
def alice_dataset(alice):
    from datasets.services.datasets import dataset_create

    return dataset_create(owner=alice, name="Alice photos")


@pytest.fixture
def alice_images(alice_dataset, small_png):
    return upload_photos(alice_dataset, small_png)


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
def bob_dataset(bob, small_png):
    from datasets.services.datasets import dataset_create
    from templates_app.services import template_create

    dataset = dataset_create(owner=bob, name="Bob private")
    images = upload_photos(dataset, small_png, names=("coffee",))
    template_create(
        dataset=dataset, points=[{"x_norm": 0.5, "y_norm": 0.5, "positive": True}], reference_image=images[0]
    )
    return dataset
