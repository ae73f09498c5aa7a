"""Job page tiles load 320 px thumbnails made once per variant, never the full-size variant (issue 16)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image

from datasets.models import Variant
from datasets.services import thumbnails
from tests.fixtures.factories import upload_photos

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_job(alice_dataset, photo_png, django_capture_on_commit_callbacks):
    """A finished job over two full-size photos (512 px and 400x600) with one template."""
    from datasets.jobs.services import job_create
    from templates_app.services import template_create

    images = upload_photos(alice_dataset, photo_png, names=("astronaut", "coffee"))
    template_create(
        dataset=alice_dataset,
        points=[{"x_norm": 0.5, "y_norm": 0.35, "positive": True}],
        reference_image=images[0],
        default_edits={"brightness": 0.3},
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = job_create(dataset=alice_dataset, owner=alice_dataset.owner)
    job.refresh_from_db()
    assert job.variant_count == 2
    return job


def test_job_page_tiles_use_thumbnails_and_the_lightbox_the_full_file(alice_client, finished_job):
    body = alice_client.get(reverse("ui-job", args=[finished_job.public_id])).content.decode()
    for variant in Variant.objects.filter(job=finished_job):
        thumb = reverse("ui-variant-thumbnail", args=[variant.id.hex])
        full = reverse("api-variant-file", args=[variant.id.hex])
        assert f'<img src="{thumb}"' in body
        assert f'data-src="{full}"' in body  # the lightbox opens the full-size file
        assert f'<img src="{full}"' not in body


def test_thumbnail_is_small_made_once_and_cached_in_storage(alice_client, finished_job, monkeypatch):
    variant = Variant.objects.filter(job=finished_job).first()
    url = reverse("ui-variant-thumbnail", args=[variant.id.hex])
    calls = []
    original = thumbnails._encode
    monkeypatch.setattr(thumbnails, "_encode", lambda v: calls.append(v.id) or original(v))

    first = alice_client.get(url)
    assert first.status_code == 200 and first["Content-Type"] == "image/webp"
    assert "immutable" in first["Cache-Control"]
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "WEBP" and max(image.size) == 320
    assert max(variant.width, variant.height) > 320
    with variant.file.open("rb") as handle:
        assert len(first.content) * 4 < len(handle.read())

    second = alice_client.get(url)
    assert second.content == first.content
    assert calls == [variant.id]  # encoded once; the second answer came from storage
    name = thumbnails.variant_thumbnail_ensure(variant=variant).name
    assert default_storage.exists(name) and variant.sha256[:12] in name


def test_thumbnail_race_leaves_one_file(finished_job, monkeypatch):
    from django.core.files.base import ContentFile

    variant = Variant.objects.filter(job=finished_job).first()
    original = thumbnails._encode

    def encode_while_another_process_saves(v):
        data, suffix = original(v)
        # The other process checked, encoded and saved the same thumbnail between our check and our save.
        default_storage.save(thumbnails._stem(v.file.name, v.sha256) + suffix, ContentFile(data))
        return data, suffix

    monkeypatch.setattr(thumbnails, "_encode", encode_while_another_process_saves)
    thumb = thumbnails.variant_thumbnail_ensure(variant=variant)
    folder, name = thumb.name.rsplit("/", 1)
    _, files = default_storage.listdir(folder)
    assert [f for f in files if ".thumb-" in f] == [name]


def test_grayscale_variant_gets_a_one_channel_thumbnail(
    alice_client, alice, photo_png, django_capture_on_commit_callbacks
):
    from datasets.jobs.services import job_create
    from datasets.services.datasets import dataset_create
    from templates_app.services import template_create

    dataset = dataset_create(owner=alice, name="Gray")
    (image,) = upload_photos(dataset, photo_png, names=("camera",))
    template_create(
        dataset=dataset,
        points=[{"x_norm": 0.5, "y_norm": 0.4, "positive": True}],
        reference_image=image,
        default_edits={"brightness": 0.2},
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = job_create(dataset=dataset, owner=alice)
    variant = Variant.objects.get(job=job)
    response = alice_client.get(reverse("ui-variant-thumbnail", args=[variant.id.hex]))
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.mode == "L" and max(thumb.size) == 320
    assert np.asarray(thumb).std() > 10  # a real picture, not a flat tile


def test_thumbnails_are_deleted_with_the_dataset(
    alice_client, alice_dataset, finished_job, django_capture_on_commit_callbacks
):
    from datasets.services.datasets import dataset_delete

    variant = Variant.objects.filter(job=finished_job).first()
    assert alice_client.get(reverse("ui-variant-thumbnail", args=[variant.id.hex])).status_code == 200
    name = thumbnails.variant_thumbnail_ensure(variant=variant).name
    assert default_storage.exists(name)
    with django_capture_on_commit_callbacks(execute=True):
        dataset_delete(dataset=alice_dataset)
    assert not default_storage.exists(name)


def test_bob_gets_404_for_alices_thumbnail_and_anonymous_is_sent_to_login(client, bob_client, finished_job):
    variant = Variant.objects.filter(job=finished_job).first()
    url = reverse("ui-variant-thumbnail", args=[variant.id.hex])
    assert bob_client.get(url).status_code == 404
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert bob_client.get(reverse("ui-variant-thumbnail", args=["0" * 32])).status_code == 404
