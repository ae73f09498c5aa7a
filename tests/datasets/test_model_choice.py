"""Per-dataset model choice: the models list, the dataset's ``checkpoint``, the segmenter it resolves to,
the embedding cache per family, and /health with a checkpoint of no known family."""

from __future__ import annotations

import shutil

import pytest

from datasets.image_io import decode_stored_image
from datasets.segmentation import app_segmenter, embedding_cache
from imaging.registry import loaded_models
from tests.fixtures.factories import DatasetFactory
from tests.fixtures.uploads import post_upload

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def mobile_checkpoint(tmp_path_factory):
    from imaging.tiny_families import build_family_checkpoint

    return build_family_checkpoint("mobile_sam_tiny", tmp_path_factory.mktemp("mobile") / "mobile.pth")


@pytest.fixture
def models_dir(settings, tmp_path, tiny_sam_checkpoint, mobile_checkpoint):
    """models/ with a SAM 1 (the site's, by SAM_CHECKPOINT), a MobileSAM and a file of no known family."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_sam_checkpoint, folder / "a_sam.pth")
    shutil.copy(mobile_checkpoint, folder / "b_mobile.pth")
    (folder / "c_garbage.pth").write_bytes(b"not a checkpoint at all")
    settings.SAM_BACKEND = "sam"
    settings.SAM_MODELS_DIR = folder
    settings.SAM_CHECKPOINT = str(folder / "a_sam.pth")
    return folder


def patch(api, dataset, **payload):
    return api.patch(f"/api/datasets/{dataset.id.hex}/", payload, format="json")


def test_the_models_list_names_family_size_and_errors(alice_api, models_dir):
    response = alice_api.get("/api/models/")

    assert response.status_code == 200
    rows = {row["name"]: row for row in response.json()}
    assert list(rows) == ["a_sam.pth", "b_mobile.pth", "c_garbage.pth"]
    assert rows["a_sam.pth"]["family"] == "sam" and rows["a_sam.pth"]["default"] is True
    assert rows["b_mobile.pth"]["family"] == "mobile_sam" and rows["b_mobile.pth"]["label"]
    assert rows["b_mobile.pth"]["fingerprint"] != rows["a_sam.pth"]["fingerprint"]
    assert rows["b_mobile.pth"]["error"] is None and rows["b_mobile.pth"]["default"] is False
    assert rows["c_garbage.pth"]["error"] and rows["c_garbage.pth"]["family"] is None


def test_the_models_list_needs_a_signed_in_user(client, models_dir):
    response = client.get("/api/models/")
    assert response.status_code == 401 and "error" in response.json()


def test_a_dataset_picks_a_model_and_an_unknown_one_is_400_with_the_choices(alice_api, alice, models_dir):
    dataset = DatasetFactory(owner=alice)

    unknown = patch(alice_api, dataset, checkpoint="nope.pth")
    garbage = patch(alice_api, dataset, checkpoint="c_garbage.pth")
    for response in (unknown, garbage):
        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "invalid_checkpoint" and body["field"] == "checkpoint"
        assert body["choices"] == ["a_sam.pth", "b_mobile.pth"] and "b_mobile.pth" in body["detail"]
    dataset.refresh_from_db()
    assert dataset.checkpoint == ""

    picked = patch(alice_api, dataset, checkpoint="b_mobile.pth")
    assert picked.status_code == 200 and picked.json()["checkpoint"] == "b_mobile.pth"
    assert picked.json()["name"] == dataset.name, "a PATCH of the checkpoint keeps the name"
    dataset.refresh_from_db()
    assert app_segmenter(dataset).family == "mobile_sam"
    assert app_segmenter().family == "sam", "the site's model is unchanged"
    # Blank goes back to the site's model.
    assert patch(alice_api, dataset, checkpoint="").json()["checkpoint"] == ""


def test_create_with_a_checkpoint_and_a_refused_one_leaves_no_dataset(alice_api, alice, models_dir):
    created = alice_api.post("/api/datasets/", {"name": "Fast", "checkpoint": "b_mobile.pth"}, format="json")
    assert created.status_code == 201 and created.json()["checkpoint"] == "b_mobile.pth"
    refused = alice_api.post("/api/datasets/", {"name": "Bad", "checkpoint": "x.pth"}, format="json")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_checkpoint"
    assert list(alice.datasets.values_list("name", flat=True)) == ["Fast"]


def test_bob_cannot_change_alices_model(bob_api, alice, models_dir):
    dataset = DatasetFactory(owner=alice)
    assert patch(bob_api, dataset, checkpoint="b_mobile.pth").status_code == 404
    dataset.refresh_from_db()
    assert dataset.checkpoint == ""


def test_a_removed_checkpoint_falls_back_to_the_sites(alice, models_dir):
    dataset = DatasetFactory(owner=alice, checkpoint="b_mobile.pth")
    (models_dir / "b_mobile.pth").unlink()
    assert app_segmenter(dataset).family == "sam"


def test_the_same_image_under_two_families_is_encoded_once_per_family(
    alice_api, alice, models_dir, photo_png, settings
):
    settings.SAM_MAX_LOADED_MODELS = 2
    sam_set = DatasetFactory(owner=alice, name="sam")
    mobile_set = DatasetFactory(owner=alice, name="mobile", checkpoint="b_mobile.pth")
    for dataset in (sam_set, mobile_set):
        assert post_upload(alice_api, dataset, [("chelsea.png", photo_png["chelsea"])]).status_code == 201
    point = {"points": [{"x_norm": 0.5, "y_norm": 0.5}]}
    images = [dataset.images.get() for dataset in (sam_set, mobile_set, sam_set, mobile_set)]
    for image in images:
        response = alice_api.post(f"/api/images/{image.id.hex}/segment/", point, format="json")
        assert response.status_code == 200, response.content

    sam, mobile = app_segmenter(sam_set), app_segmenter(mobile_set)
    assert (sam.family, mobile.family) == ("sam", "mobile_sam")
    assert sam.encode_calls == 1 and mobile.encode_calls == 1
    assert len(loaded_models()) == 2
    rgb = decode_stored_image(images[0].file).rgb
    cached_sam = embedding_cache().get(images[0].sha256, sam.fingerprint)
    cached_mobile = embedding_cache().get(images[1].sha256, mobile.fingerprint)
    assert cached_sam is not None and cached_mobile is not None
    assert cached_sam.fingerprint != cached_mobile.fingerprint and rgb.shape[0] > 0


def test_health_is_degraded_by_a_checkpoint_of_no_known_family_and_the_app_still_serves(
    client, alice_api, models_dir, settings
):
    settings.SAM_CHECKPOINT = str(models_dir / "c_garbage.pth")

    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded" and body["database"] == "ok"
    assert body["checkpoint"] == "c_garbage.pth" and body["error"] and body["family"] is None
    assert alice_api.get("/api/datasets/").status_code == 200
    assert alice_api.get("/api/models/").status_code == 200


def test_health_names_the_family_and_size(client, models_dir, settings):
    settings.SAM_CHECKPOINT = str(models_dir / "b_mobile.pth")
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["family"] == "mobile_sam" and body["label"]
    assert body["error"] is None and body["sam_loaded"] is False
