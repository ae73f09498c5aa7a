"""Previews of large images work on a stored working copy; cache reports never reveal other users' uploads."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from datasets.services import previews
from tests.fixtures.factories import DatasetFactory, DatasetImageFactory, TemplateFactory
from tests.fixtures.images import png_bytes

pytestmark = pytest.mark.django_db

POINT = {"x_norm": 0.4, "y_norm": 0.4, "positive": True}


def _image(owner, content: bytes, width: int, height: int, position: int = 0):
    return DatasetImageFactory(
        dataset=DatasetFactory(owner=owner),
        file=ContentFile(content, name="image.png"),
        width=width,
        height=height,
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        position=position,
    )


@pytest.fixture
def full_decodes(monkeypatch):
    """Counts decodes of stored originals by the preview services."""
    calls = []
    real = previews.decode_dataset_image

    def counting(image):
        calls.append(image.file.name)
        return real(image)

    monkeypatch.setattr(previews, "decode_dataset_image", counting)
    return calls


@pytest.fixture(autouse=True)
def _fresh_memory():
    from django.core.cache import cache

    previews.recent_embeddings.clear()
    cache.clear()
    yield
    previews.recent_embeddings.clear()


def test_edit_previews_of_a_large_image_decode_the_original_once(alice, alice_api, settings, full_decodes):
    settings.PREVIEW_MAX_SIDE = 256
    image = _image(alice, png_bytes(600, 400, seed=5), 600, 400)
    TemplateFactory(dataset=image.dataset, default_edits={"brightness": 0.3})
    url = f"/api/datasets/{image.dataset.id.hex}/preview/"

    first = alice_api.post(url, {"image_id": image.id.hex}, format="json")
    again = [alice_api.post(url, {"image_id": image.id.hex}, format="json") for _ in range(2)]

    assert first.status_code == 200 and (first.json()["width"], first.json()["height"]) == (256, 171)
    assert all(r.status_code == 200 and r.json()["applied"] for r in again)
    assert full_decodes == [image.file.name]  # once, to make the working copy
    working = f"working/{image.dataset_id.hex}/{image.file.name.rsplit('/', 1)[1].rsplit('.', 1)[0]}.png"
    assert default_storage.exists(working)


def test_segment_previews_of_a_large_image_use_the_working_copy_at_full_size(
    alice, alice_api, settings, full_decodes
):
    settings.PREVIEW_MAX_SIDE = 256
    image = _image(alice, png_bytes(600, 400, seed=6), 600, 400)
    url = f"/api/images/{image.id.hex}/segment/"

    responses = []
    for _ in range(3):
        previews.recent_embeddings.clear()  # as in another process
        responses.append(alice_api.post(url, {"points": [POINT]}, format="json"))

    assert all(r.status_code == 200 for r in responses)
    assert {(r.json()["width"], r.json()["height"]) for r in responses} == {(600, 400)}
    assert full_decodes == [image.file.name]


def test_deleting_an_image_deletes_its_working_copy(
    alice, alice_api, settings, django_capture_on_commit_callbacks
):
    settings.PREVIEW_MAX_SIDE = 256
    image = _image(alice, png_bytes(600, 400, seed=7), 600, 400)
    TemplateFactory(dataset=image.dataset)
    alice_api.post(
        f"/api/datasets/{image.dataset.id.hex}/preview/", {"image_id": image.id.hex}, format="json"
    )
    working = f"working/{image.dataset_id.hex}/{image.file.name.rsplit('/', 1)[1].rsplit('.', 1)[0]}.png"
    assert default_storage.exists(working)

    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.delete(f"/api/images/{image.id.hex}/").status_code == 204

    assert not default_storage.exists(working)


def test_a_segment_preview_does_not_tell_that_another_user_has_the_same_bytes(alice, bob, alice_api, bob_api):
    content = png_bytes(64, 48, seed=40)
    bobs, alices = _image(bob, content, 64, 48), _image(alice, content, 64, 48)
    bob_api.post(f"/api/images/{bobs.id.hex}/segment/", {"points": [POINT]}, format="json")

    first = alice_api.post(f"/api/images/{alices.id.hex}/segment/", {"points": [POINT]}, format="json")
    second = alice_api.post(f"/api/images/{alices.id.hex}/segment/", {"points": [POINT]}, format="json")

    assert first.json()["cached"] is False  # bob's embedding served it, but that is bob's business
    assert second.json()["cached"] is True  # alice's own first preview made it


def test_prewarm_and_precompute_report_per_user(alice, bob, alice_api, bob_api, use_tiny_sam):
    content = png_bytes(64, 48, seed=41)
    bobs, alices = _image(bob, content, 64, 48), _image(alice, content, 64, 48)
    _image(bob, png_bytes(64, 48, seed=42), 64, 48, position=1)  # more of bob's data in the shared cache
    bob_api.post("/sam/dataset/precompute", {"dataset_id": bobs.dataset.id.hex}, format="json")

    prewarm = alice_api.post(f"/api/datasets/{alices.dataset.id.hex}/prewarm/", {}, format="json").json()
    again = alice_api.post(f"/api/datasets/{alices.dataset.id.hex}/prewarm/", {}, format="json").json()
    precompute = alice_api.post(
        "/sam/dataset/precompute", {"dataset_id": alices.dataset.id.hex}, format="json"
    ).json()

    assert (prewarm["computed"], prewarm["skipped"]) == (1, 0)
    assert (again["computed"], again["skipped"]) == (0, 1)
    assert precompute["total_cache"] == 1  # alice's images, not the cache's global count
