"""POST /api/datasets/{id}/images/: files and ZIPs in, per-file rejections out, limits, nothing left behind."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zipfile

import numpy as np
import pytest
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from PIL import Image

from datasets.models import DatasetImage
from tests.fixtures.factories import DatasetImageFactory
from tests.fixtures.images import image_bytes, make_zip, png_bytes
from tests.fixtures.uploads import images_url, post_upload, stored_files, upload_file

pytestmark = pytest.mark.django_db

STORED_NAME = re.compile(r"^(datasets|thumbnails)/[0-9a-f]{32}/[0-9a-f]{32}\.(png|jpg|bmp|tif|webp|gif)$")


def test_it_stores_real_photos_in_several_formats_with_their_metadata(
    alice_api, alice_dataset, photo_png, tiff16, bmp8, jpeg, settings
):
    files = [
        ("pass_astronaut.png", photo_png["astronaut"]),
        ("coffee FAIL.png", photo_png["coffee"]),
        ("camera16.tif", tiff16),
        ("camera8.bmp", bmp8),
        ("chelsea.jpg", jpeg),
    ]
    response = post_upload(alice_api, alice_dataset, files)

    assert response.status_code == 201
    body = response.json()
    assert body["count"] == 5 and body["rejected"] == []
    assert body["dataset"]["image_count"] == 5
    created = {image["filename"]: image for image in body["created"]}
    assert [image["filename"] for image in body["created"]] == [name for name, _ in files]
    assert [image["position"] for image in body["created"]] == [0, 1, 2, 3, 4]
    astronaut = created["pass_astronaut.png"]
    assert (astronaut["width"], astronaut["height"], astronaut["is_grayscale"]) == (512, 512, False)
    assert astronaut["image_class"] == "pass"
    assert astronaut["sha256"] == hashlib.sha256(photo_png["astronaut"]).hexdigest()
    assert astronaut["size_bytes"] == len(photo_png["astronaut"])
    assert (created["coffee FAIL.png"]["width"], created["coffee FAIL.png"]["height"]) == (600, 400)
    assert created["coffee FAIL.png"]["image_class"] == "fail"
    assert created["camera16.tif"]["is_grayscale"] is True and created["camera16.tif"]["image_class"] == ""
    assert created["camera8.bmp"]["is_grayscale"] is True
    assert (created["chelsea.jpg"]["width"], created["chelsea.jpg"]["height"]) == (451, 300)
    assert astronaut["file_url"].endswith(f"/api/images/{astronaut['id']}/file/")
    assert astronaut["thumbnail_url"].endswith(f"/api/images/{astronaut['id']}/thumbnail/")

    # Stored under random names (never the user's), the original bytes kept exactly, thumbnails 160 px.
    assert all(STORED_NAME.match(name) for name in stored_files(settings)), stored_files(settings)
    image = DatasetImage.objects.get(dataset=alice_dataset, filename="coffee FAIL.png")
    with image.file.open("rb") as handle:
        assert handle.read() == photo_png["coffee"]
    with image.thumbnail.open("rb") as handle:
        thumbnail = Image.open(io.BytesIO(handle.read()))
    assert thumbnail.format == "PNG" and thumbnail.size == (160, 107)
    assert DatasetImage.objects.get(filename="camera16.tif").file.name.endswith(".tif")


def test_a_second_upload_continues_the_order_and_makes_names_unique(alice_api, alice_dataset):
    first = post_upload(
        alice_api, alice_dataset, [("part.png", png_bytes(seed=1)), ("part.png", png_bytes(seed=2))]
    )
    second = post_upload(
        alice_api, alice_dataset, [("part.png", png_bytes(seed=3)), ("PART.png", png_bytes(seed=4))]
    )

    assert [(i["filename"], i["position"]) for i in first.json()["created"]] == [
        ("part.png", 0),
        ("part-2.png", 1),
    ]
    assert [(i["filename"], i["position"]) for i in second.json()["created"]] == [
        ("part-3.png", 2),
        ("PART-4.png", 3),
    ]
    assert {i["original_filename"] for i in second.json()["created"]} == {"part.png", "PART.png"}


def test_filenames_are_sanitised_for_display_and_the_original_is_kept(alice_api, alice_dataset):
    long_name = "x" * 300 + ".png"
    archive = make_zip({"dir\\sub/bad\x07name\x1b .png": png_bytes(seed=1), long_name: png_bytes(seed=2)})
    response = post_upload(
        alice_api, alice_dataset, [("  .hidden\u202e.png", png_bytes(seed=3))], zip_data=archive
    )

    created = response.json()["created"]
    assert [image["filename"] for image in created[:2]] == ["hidden.png", "badname.png"]
    assert created[1]["original_filename"] == "dir\\sub/bad\x07name\x1b .png"
    assert created[2]["filename"] == "x" * 146 + ".png"
    assert created[2]["original_filename"] == long_name[:255]


def test_bad_files_are_reported_one_by_one_while_the_good_ones_are_kept(
    alice_api, alice_dataset, photo_png, settings
):
    truncated = photo_png["astronaut"][: len(photo_png["astronaut"]) // 2]
    response = post_upload(
        alice_api,
        alice_dataset,
        [
            ("good.png", photo_png["coffee"]),
            ("notes.png", b"these are not pixels"),
            ("cut.png", truncated),
            ("again.png", photo_png["coffee"]),
        ],
    )

    assert response.status_code == 201
    body = response.json()
    assert [image["filename"] for image in body["created"]] == ["good.png"]
    assert body["rejected"] == [
        {
            "filename": "notes.png",
            "error": "invalid_image: not an image (unrecognised or unsupported format)",
        },
        {"filename": "cut.png", "error": "invalid_image: truncated image"},
        {"filename": "again.png", "error": "duplicate: same content as good.png"},
    ]
    assert len(stored_files(settings)) == 2  # the good image and its thumbnail, nothing for the rejects


def test_a_file_already_in_the_dataset_is_a_duplicate(alice_api, alice_dataset, photo_png):
    post_upload(alice_api, alice_dataset, [("first.png", photo_png["camera"])])
    response = post_upload(alice_api, alice_dataset, [("renamed.png", photo_png["camera"])])

    assert response.status_code == 200  # nothing stored, but not an error: the reasons are listed
    assert response.json()["created"] == []
    assert response.json()["rejected"] == [
        {"filename": "renamed.png", "error": "duplicate: same content as first.png"}
    ]


def test_the_same_file_may_go_into_two_datasets(alice_api, alice_dataset, alice, photo_png):
    from tests.fixtures.factories import DatasetFactory

    other = DatasetFactory(owner=alice)
    assert post_upload(alice_api, alice_dataset, [("a.png", photo_png["camera"])]).status_code == 201
    assert post_upload(alice_api, other, [("a.png", photo_png["camera"])]).status_code == 201
    # Duplicates are refused per dataset only: each dataset holds its own copy of the same content.
    assert alice_dataset.images.count() == other.images.count() == 1
    assert alice_dataset.images.get().sha256 == other.images.get().sha256


def test_a_file_over_the_size_limit_is_rejected_with_the_limit(alice_api, alice_dataset, photos, settings):
    settings.MAX_UPLOAD_MB = 1
    big = image_bytes(np.tile(photos["astronaut"], (2, 2, 1)), "BMP")  # 1024x1024x3 = 3 MB uncompressed
    response = post_upload(alice_api, alice_dataset, [("big.bmp", big), ("small.png", png_bytes())])

    assert response.status_code == 201
    assert [image["filename"] for image in response.json()["created"]] == ["small.png"]
    assert response.json()["rejected"] == [
        {"filename": "big.bmp", "error": "file_too_large: 3.0 MB exceeds the 1 MB limit"}
    ]


def test_an_image_over_the_pixel_limit_is_rejected(alice_api, alice_dataset, settings):
    settings.MAX_IMAGE_MEGAPIXELS = 1
    huge = image_bytes(np.zeros((1200, 1000, 3), np.uint8), "PNG")
    response = post_upload(alice_api, alice_dataset, [("huge.png", huge)])

    assert response.json()["rejected"] == [
        {"filename": "huge.png", "error": "invalid_image: image too large: 1.2 MP > 1 MP limit"}
    ]


def test_no_files_is_a_400(alice_api, alice_dataset):
    response = alice_api.post(images_url(alice_dataset), {}, format="multipart")

    assert response.status_code == 400
    assert response.json() == {"error": "no_files", "detail": "provide images[] or zip", "field": "images"}


def test_images_brackets_field_name_is_accepted(alice_api, alice_dataset):
    response = alice_api.post(
        images_url(alice_dataset), {"images[]": [upload_file("a.png", png_bytes())]}, format="multipart"
    )
    assert response.status_code == 201
    assert [image.filename for image in alice_dataset.images.all()] == ["a.png"]


def test_more_images_than_the_dataset_may_hold_is_refused_before_anything_is_stored(
    alice_api, alice_dataset, settings
):
    settings.MAX_IMAGES_PER_DATASET = 3
    DatasetImageFactory(dataset=alice_dataset, position=0)
    DatasetImageFactory(dataset=alice_dataset, position=1)
    before = stored_files(settings)

    response = post_upload(
        alice_api, alice_dataset, [("a.png", png_bytes(seed=5)), ("b.png", png_bytes(seed=6))]
    )

    assert response.status_code == 400
    assert response.json()["error"] == "max_images_exceeded"
    assert response.json()["detail"] == "max_images_exceeded:4/3"
    assert alice_dataset.images.count() == 2
    assert stored_files(settings) == before


def test_more_parts_than_django_parses_is_a_json_400(alice_api, alice_dataset, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2  # settings raise it to the dataset limit + 10
    files = [(f"{i}.png", png_bytes(seed=i)) for i in range(3)]
    response = post_upload(alice_api, alice_dataset, files)

    assert response.status_code == 400
    assert response.json() == {
        "error": "too_many_files",
        "detail": "too many files in one request",
        "field": "images",
    }
    assert alice_dataset.images.count() == 0


def test_a_zip_counts_its_image_entries_against_the_limit(alice_api, alice_dataset, settings):
    settings.MAX_IMAGES_PER_DATASET = 2
    archive = make_zip({f"img{i}.png": png_bytes(seed=i) for i in range(3)} | {"readme.txt": b"x"})
    response = post_upload(alice_api, alice_dataset, zip_data=archive)

    assert response.json()["detail"] == "max_images_exceeded:3/2"


# --- ZIP archives -----------------------------------------------------------------------------------------


def test_a_zip_adds_its_image_entries_flattened_and_skips_the_rest(alice_api, alice_dataset, photo_png, bmp8):
    archive = make_zip(
        {
            "set/": b"",
            "set/pass_astronaut.png": photo_png["astronaut"],
            "set/deep/er/coffee.png": photo_png["coffee"],
            "other/coffee.png": photo_png["chelsea"],
            "set/camera.BMP": bmp8,
            "__MACOSX/set/._pass_astronaut.png": b"resource fork",
            ".hidden.png": b"hidden",
            "set/.DS_Store": b"finder",
            "set/readme.txt": b"hello",
        }
    )
    response = post_upload(alice_api, alice_dataset, zip_data=archive)

    assert response.status_code == 201
    created = response.json()["created"]
    assert [(i["filename"], i["original_filename"]) for i in created] == [
        ("pass_astronaut.png", "set/pass_astronaut.png"),
        ("coffee.png", "set/deep/er/coffee.png"),
        ("coffee-2.png", "other/coffee.png"),
        ("camera.BMP", "set/camera.BMP"),
    ]
    assert created[0]["image_class"] == "pass" and created[3]["is_grayscale"] is True
    assert response.json()["rejected"] == []


def test_files_and_a_zip_in_one_request(alice_api, alice_dataset, photo_png):
    archive = make_zip({"z.png": photo_png["coffee"]})
    response = post_upload(alice_api, alice_dataset, [("f.png", photo_png["camera"])], zip_data=archive)

    assert [i["filename"] for i in response.json()["created"]] == ["f.png", "z.png"]


def test_zip_entries_with_parent_or_absolute_paths_cannot_escape(
    alice_api, alice_dataset, photo_png, settings, tmp_path
):
    archive = make_zip(
        {
            "../../evil.png": photo_png["astronaut"],
            "/etc/abs.png": photo_png["coffee"],
            "..\\..\\windows.png": photo_png["camera"],
        }
    )
    response = post_upload(alice_api, alice_dataset, zip_data=archive)

    assert [i["filename"] for i in response.json()["created"]] == ["evil.png", "abs.png", "windows.png"]
    assert all(STORED_NAME.match(name) for name in stored_files(settings))
    escaped = [p for p in tmp_path.parent.rglob("*") if p.name in ("evil.png", "abs.png", "windows.png")]
    assert escaped == []


def test_an_oversize_zip_entry_is_rejected_like_a_file(alice_api, alice_dataset, settings):
    settings.MAX_UPLOAD_MB = 1
    noise = np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8)
    archive = make_zip({"noise.png": image_bytes(noise, "PNG"), "ok.png": png_bytes()})
    response = post_upload(alice_api, alice_dataset, zip_data=archive)

    assert [i["filename"] for i in response.json()["created"]] == ["ok.png"]
    assert response.json()["rejected"][0]["filename"] == "noise.png"
    assert response.json()["rejected"][0]["error"].startswith("file_too_large: 1.8 MB exceeds the 1 MB limit")


def _assert_zip_error(response, reason: str, settings, dataset) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "zip_error"
    assert body["detail"] == f"zip_error:{reason}"
    assert body["reason"] == reason and body["explanation"]
    assert dataset.images.count() == 0
    assert stored_files(settings) == []  # nothing left behind


def test_a_zip_bomb_is_refused_by_its_compression_ratio(alice_api, alice_dataset, settings):
    archive = make_zip({"bomb.png": bytes(50 * 1024 * 1024)})  # 50 MB of zeros deflate to ~50 KB
    assert len(archive) < 200_000

    _assert_zip_error(
        post_upload(alice_api, alice_dataset, zip_data=archive), "compression_ratio", settings, alice_dataset
    )


def test_a_zip_over_the_uncompressed_limit_is_refused_before_inflating(alice_api, alice_dataset, settings):
    settings.MAX_ZIP_UNCOMPRESSED_MB = 1
    noise = np.random.default_rng(1).integers(0, 255, 3 * 1024 * 1024, dtype=np.uint8).tobytes()
    archive = make_zip({"a.png": png_bytes(), "noise.png": noise})

    _assert_zip_error(
        post_upload(alice_api, alice_dataset, zip_data=archive), "too_large", settings, alice_dataset
    )


def _lie_about_size(archive: bytes, entry: str, declared: int) -> bytes:
    """Rewrite the central directory's uncompressed size of ``entry`` (what zipfile trusts)."""
    data = bytearray(archive)
    offset = data.find(b"PK\x01\x02")
    while offset != -1:
        name_length = struct.unpack_from("<H", data, offset + 28)[0]
        name = bytes(data[offset + 46 : offset + 46 + name_length]).decode()
        if name == entry:
            struct.pack_into("<I", data, offset + 24, declared)
            return bytes(data)
        offset = data.find(b"PK\x01\x02", offset + 4)
    raise AssertionError(f"{entry} not found")


def test_an_entry_that_inflates_past_its_declared_size_aborts_the_upload_and_leaves_nothing(
    alice_api, alice_dataset, photo_png, settings
):
    # The good image is processed (and stored) first; the lying entry then aborts everything.
    archive = make_zip({"good.png": photo_png["coffee"], "liar.png": bytes(20 * 1024 * 1024)})
    archive = _lie_about_size(archive, "liar.png", 4096)
    assert zipfile.ZipFile(io.BytesIO(archive)).getinfo("liar.png").file_size == 4096

    response = post_upload(alice_api, alice_dataset, zip_data=archive)

    _assert_zip_error(response, "corrupt_entry", settings, alice_dataset)
    assert "CRC" in response.json()["explanation"]


def test_an_entry_shorter_than_declared_aborts_the_upload(alice_api, alice_dataset, photo_png, settings):
    archive = make_zip({"short.png": photo_png["camera"]}, compression=zipfile.ZIP_STORED)
    archive = _lie_about_size(archive, "short.png", len(photo_png["camera"]) + 10)

    _assert_zip_error(
        post_upload(alice_api, alice_dataset, zip_data=archive), "size_mismatch", settings, alice_dataset
    )


def test_a_broken_archive_is_a_zip_error(alice_api, alice_dataset, settings):
    response = post_upload(alice_api, alice_dataset, zip_data=b"PK\x03\x04 definitely not a zip")
    _assert_zip_error(response, "bad_archive", settings, alice_dataset)


def test_a_zip_without_images_is_a_zip_error(alice_api, alice_dataset, settings):
    archive = make_zip({"notes.txt": b"hi", "data/": b"", "__MACOSX/._x.png": b"x"})
    _assert_zip_error(
        post_upload(alice_api, alice_dataset, zip_data=archive), "no_images", settings, alice_dataset
    )


def test_too_many_entries_is_a_zip_error(alice_api, alice_dataset, settings):
    settings.MAX_IMAGES_PER_DATASET = 2  # the entry limit is max(1000, 4 x this)
    archive = make_zip({f"f{i}.txt": b"" for i in range(1001)})
    _assert_zip_error(
        post_upload(alice_api, alice_dataset, zip_data=archive), "too_many_entries", settings, alice_dataset
    )


def test_two_zips_in_one_request_are_refused(alice_api, alice_dataset):
    archive = make_zip({"a.png": png_bytes()})
    response = alice_api.post(
        images_url(alice_dataset),
        {"zip": [upload_file("1.zip", archive), upload_file("2.zip", archive)]},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["error"] == "too_many_archives"


# --- authentication and ownership --------------------------------------------------------------------------


def test_bob_cannot_upload_to_or_list_alices_dataset(bob_api, alice_dataset):
    upload = post_upload(bob_api, alice_dataset, [("a.png", png_bytes())])
    listing = bob_api.get(images_url(alice_dataset))

    assert (upload.status_code, upload.json()["error"]) == (404, "not_found")
    assert listing.status_code == 404
    assert alice_dataset.images.count() == 0


def test_anonymous_uploads_are_401(client, alice_dataset):
    response = client.post(images_url(alice_dataset), {"images": [upload_file("a.png", png_bytes())]})
    assert response.status_code == 401


def test_session_uploads_need_the_csrf_token(alice, alice_dataset):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    files = {"images": [upload_file("a.png", png_bytes())]}

    refused = browser.post(images_url(alice_dataset), files)
    token = _get_new_csrf_string()
    browser.cookies["csrftoken"] = token
    accepted = browser.post(
        images_url(alice_dataset), {"images": [upload_file("a.png", png_bytes())]}, HTTP_X_CSRFTOKEN=token
    )

    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert accepted.status_code == 201
