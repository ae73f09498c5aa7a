"""Legacy is a wire layer over the dataset services: the same upload rules, the same segmentation and
embedding cache. These pin the answers chosen where the legacy copies disagreed with the datasets' ones."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.segmentation import app_segmenter
from datasets.services.uploads import sanitize_filename
from imaging.codecs import b64encode, encode_mask_png
from legacy.models import LegacySession
from legacy.wire import parse_top_k
from samsite.common.errors import ServiceError
from tests.fixtures.seed_api import init_dataset, post_json, upload

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("C:\\photos\\  my   cat .png", "my cat.png"),  # whitespace collapsed and trimmed (was kept)
        ("a" * 200 + ".png", "a" * 146 + ".png"),  # cut to 150 keeping the extension (was 255)
        (".hidden.png", "hidden.png"),  # no leading dot (was kept)
    ],
)
def test_a_legacy_display_name_follows_the_dataset_upload_rule(alice_api, photo_files, sent, stored):
    response = alice_api.post("/sam/init", {"image": upload(sent, photo_files["chelsea.png"])})

    assert response.status_code == 200, response.content
    assert response.json()["filename"] == stored == sanitize_filename(sent)
    assert LegacySession.objects.get(pk=response.json()["image_id"]).filename == stored


def test_a_legacy_upload_over_the_size_limit_has_the_dataset_uploads_detail(alice_api, settings):
    settings.MAX_UPLOAD_MB = 1
    big = upload("big.png", b"\x89PNG" + b"\x00" * (3 * 1024 * 1024))

    response = alice_api.post("/sam/init", {"image": big})

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_image",
        "detail": "file_too_large: 3.0 MB exceeds the 1 MB limit",
    }
    assert not LegacySession.objects.exists()


def test_a_batch_file_over_the_size_limit_is_an_error_entry(alice_api, photo_files, settings):
    settings.MAX_UPLOAD_MB = 1
    files = [upload("big.png", b"\x00" * (2 * 1024 * 1024)), upload("c.png", photo_files["chelsea.png"])]

    body = alice_api.post("/sam/batch_process", {"images": files, "mode": "full"}).json()

    big, fine = body["results"]
    assert big == {
        "filename": "big.png",
        "error": "file_too_large: 2.0 MB exceeds the 1 MB limit",
        "code": "invalid_image",
    }
    assert fine["variant_png"]


def test_component_names_follow_the_display_name_rule(alice_api, photo_files):
    session = alice_api.post("/sam/init", {"image": upload("c.png", photo_files["chelsea.png"])}).json()
    mask = np.zeros((session["height"], session["width"]), dtype=bool)
    mask[3:9, 3:9] = True
    body = {"image_id": session["image_id"], "mask_png": b64encode(encode_mask_png(mask))}

    def save(name):
        return post_json(alice_api, "/sam/save_component", {**body, "name": name})

    assert save(" cap\x00 ").json()["component"]["name"] == "cap"
    assert save("\u200b ").json()["component"]["name"] == "component_2"  # blank once cleaned: the default
    # The refusals now carry ``field`` as every other invalid_name does (they had no field).
    assert save(5).json() == {"error": "invalid_name", "detail": "name must be a string", "field": "name"}
    assert save("x" * 201).json() == {
        "error": "invalid_name",
        "detail": "name is longer than 200 characters",
        "field": "name",
    }


def test_legacy_segmentation_shares_the_previews_embedding_cache(alice_api, photo_files, use_tiny_sam):
    image_id = alice_api.post("/sam/init", {"image": upload("c.png", photo_files["chelsea.png"])}).json()[
        "image_id"
    ]
    point = {"x": 40, "y": 40, "positive": True}

    first = post_json(alice_api, "/sam/segment", {"image_id": image_id, "points": [point]})
    again = post_json(
        alice_api, "/sam/segment", {"image_id": image_id, "points": [point], "accumulate": False, "top_k": 2}
    )
    batch = alice_api.post(
        "/sam/batch_process",
        {"images": [upload("c.png", photo_files["chelsea.png"])], "mode": "center_point"},
    )
    dataset = init_dataset(alice_api, photo_files, names=["chelsea.png"])
    preview = post_json(
        alice_api,
        "/sam/dataset/point_preview",
        {
            "dataset_id": dataset["dataset_id"],
            "image_id": dataset["images"][0]["id"],
            "points": [{"x_norm": 0.5, "y_norm": 0.5}],
        },
    )

    assert first.status_code == again.status_code == batch.status_code == preview.status_code == 200
    assert app_segmenter().encode_calls == 1, "one image content is encoded once, whichever flow asks"
    scores = [c["score"] for c in first.json()["candidates"]]
    assert scores == sorted(scores, reverse=True) and len(scores) <= 3
    assert again.json()["candidates"] == first.json()["candidates"][:2]


@pytest.mark.parametrize(("sent", "expected"), [(None, 3), ("", 3), ("2", 2), (2.0, 2), (7, 7)])
def test_top_k_takes_whole_numbers_as_sent(sent, expected):
    assert parse_top_k(sent) == expected


@pytest.mark.parametrize("sent", [True, 0, -1, 1.5, "inf", "nan", "many", [1], {}])
def test_top_k_refuses_anything_else(sent):
    with pytest.raises(ServiceError) as raised:
        parse_top_k(sent)
    assert raised.value.code == "invalid_top_k"
