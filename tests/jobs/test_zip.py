"""The job ZIP: entries checked one by one against manifest.json, names, masks, streaming without buffering."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest

from datasets.jobs.downloads import job_zip
from datasets.jobs.services import job_create
from datasets.models import GenerationJob
from datasets.services.names import safe_name_part
from imaging.codecs import decode_image, decode_mask_png
from tests.fixtures.factories import DatasetFactory, add_templates, store_image
from tests.fixtures.images import png_bytes

pytestmark = pytest.mark.django_db


def _download(api, job: GenerationJob) -> tuple[zipfile.ZipFile, bytes, object]:
    response = api.get(f"/api/jobs/{job.id.hex}/download/")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    return zipfile.ZipFile(io.BytesIO(body)), body, response


def _run(run_jobs, **kwargs) -> GenerationJob:
    with run_jobs():
        job = job_create(**kwargs)
    job.refresh_from_db()
    return job


def test_each_entry_matches_the_manifest_and_the_variant_rows(alice, alice_api, photo_dataset, run_jobs):
    add_templates(photo_dataset, 2)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="each", export_mask=True)
    archive, body, response = _download(alice_api, job)

    assert response["Content-Type"] == "application/zip"
    assert int(response["Content-Length"]) == len(body)
    assert response["Content-Disposition"] == f'attachment; filename="photos-{job.id.hex[:8]}.zip"'
    assert archive.testzip() is None
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["job"]["id"] == job.id.hex and manifest["job"]["compose"] == "each"
    assert manifest["job"]["export_mask"] is True and manifest["job"]["segmenter"] == job.segmenter
    assert [t["name"] for t in manifest["job"]["templates"]] == ["T1", "T2"]
    assert manifest["failed"] == [] and manifest["skipped"] == []

    rows = {(v.image.filename, v.template_names[0]): v for v in job.variants.select_related("image")}
    assert len(manifest["variants"]) == len(rows) == 8
    expected_names = {f"{image.rsplit('.', 1)[0]}__{template}.png" for image, template in rows}
    assert {entry["file"] for entry in manifest["variants"]} == expected_names
    assert set(archive.namelist()) == expected_names | {f"masks/{n[:-4]}.png" for n in expected_names} | {
        "manifest.json"
    }
    for entry in manifest["variants"]:
        info = archive.getinfo(entry["file"])
        assert info.compress_type == zipfile.ZIP_STORED
        data = archive.read(entry["file"])
        variant = rows[(entry["image"], entry["template_names"][0])]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == variant.sha256
        assert entry["template_ids"] == [variant.template_key]
        assert (entry["score"], entry["area"]) == (round(variant.score, 6), variant.area)
        decoded = decode_image(data)
        assert (decoded.width, decoded.height) == (entry["width"], entry["height"])
        mask = decode_mask_png(archive.read(entry["mask"]), expected_size=(decoded.width, decoded.height))
        assert int(mask.sum()) == entry["area"]


def test_stack_names_are_the_image_stems_and_masks_stay_out_unless_asked(
    alice, alice_api, photo_dataset, run_jobs
):
    templates = add_templates(photo_dataset, 2)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice)
    archive, _, _ = _download(alice_api, job)
    assert sorted(archive.namelist()) == sorted(
        ["astronaut.png", "coffee.png", "camera.png", "chelsea.png", "manifest.json"]
    )
    manifest = json.loads(archive.read("manifest.json"))
    assert all(entry["template_ids"] == [t.id.hex for t in templates] for entry in manifest["variants"])
    assert all("mask" not in entry for entry in manifest["variants"])


def test_the_manifest_and_the_api_give_each_variants_stored_template_ids(
    alice, alice_api, photo_dataset, run_jobs
):
    """The ids are the ones stored with the variant when it was made, never rebuilt from names (a name may be
    shared by two templates, or an image's class changed since)."""
    first, second = add_templates(photo_dataset, 2)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice)
    assert {tuple(v.template_ids) for v in job.variants.all()} == {(first.id.hex, second.id.hex)}
    only_second = job.variants.order_by("image__position").first()
    type(only_second).objects.filter(pk=only_second.pk).update(template_ids=[second.id.hex])
    archive, _, _ = _download(alice_api, job)
    manifest = json.loads(archive.read("manifest.json"))
    by_image = {entry["image_id"]: entry["template_ids"] for entry in manifest["variants"]}
    assert by_image.pop(only_second.image_id.hex) == [second.id.hex]
    assert set(map(tuple, by_image.values())) == {(first.id.hex, second.id.hex)}
    listed = alice_api.get(f"/api/jobs/{job.id.hex}/variants/").json()["results"]
    assert {v["id"]: v["template_ids"] for v in listed}[only_second.id.hex] == [second.id.hex]


def test_failed_and_skipped_images_are_listed_in_the_manifest(alice, alice_api, make_photo_dataset, run_jobs):
    from django.core.files.storage import default_storage

    dataset = make_photo_dataset(alice, filenames=["a_pass.png", "b_fail.png", "c.png", "d.png"])
    add_templates(dataset, 1, image_class="pass")
    default_storage.delete(dataset.images.get(filename="c.png").file.name)
    job = _run(run_jobs, dataset=dataset, owner=alice, output_format="jpeg")
    archive, _, _ = _download(alice_api, job)
    manifest = json.loads(archive.read("manifest.json"))
    assert [v["file"] for v in manifest["variants"]] == ["a_pass.jpg", "d.jpg"]
    assert [f["image"] for f in manifest["failed"]] == ["c.png"]
    assert [s["image"] for s in manifest["skipped"]] == ["b_fail.png"]


def test_names_are_sanitised_and_unique(alice, alice_api, run_jobs):
    dataset = DatasetFactory(owner=alice, name="Odd / names")
    store_image(dataset, "photo one.png", png_bytes(seed=1))
    store_image(dataset, "photo one.jpg", png_bytes(seed=2))
    store_image(dataset, "PHOTO ONE.bmp", png_bytes(seed=3))
    store_image(dataset, "..hidden?*.png", png_bytes(seed=4))
    add_templates(dataset, 1, name="scratch: deep/wide")
    job = _run(run_jobs, dataset=dataset, owner=alice, compose="each")
    archive, _, response = _download(alice_api, job)
    assert sorted(archive.namelist()) == sorted(
        [
            "photo one__scratch_ deep_wide.png",
            "photo one__scratch_ deep_wide-2.png",
            "PHOTO ONE__scratch_ deep_wide-3.png",
            "hidden__scratch_ deep_wide.png",
            "manifest.json",
        ]
    )
    assert response["Content-Disposition"].startswith('attachment; filename="odd-names-')  # a slug
    assert safe_name_part("../../etc/passwd") == "etc_passwd"
    assert safe_name_part("???") == "file"


def test_building_the_archive_reads_no_file_and_streams_in_small_chunks(
    alice, photo_dataset, run_jobs, monkeypatch
):
    add_templates(photo_dataset, 1)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, export_mask=True)
    from django.core.files.storage import default_storage

    opened = []
    real_open = default_storage.open
    monkeypatch.setattr(
        default_storage, "open", lambda name, mode="rb": opened.append(name) or real_open(name, mode)
    )
    archive = job_zip(job)
    size = len(archive)
    assert opened == []  # nothing is read until the response streams
    chunks = list(archive)
    assert sum(len(c) for c in chunks) == size
    assert len(opened) == 8  # 4 variants + 4 masks, each opened once while streaming
    assert max(len(c) for c in chunks) <= 64 * 1024
