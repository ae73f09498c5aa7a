"""Annotate-only jobs, training exports (COCO, YOLO, VOC, masks) loaded by pycocotools and supervision, and
quality flags on constructed masks."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from django.core.files.storage import default_storage
from PIL import Image

from datasets.jobs.services import job_create
from datasets.models import GenerationJob, JobStatus
from datasets.segmentation import app_segmenter
from imaging.codecs import decode_mask_png
from imaging.pipeline import TemplateMask
from tests.fixtures.factories import DatasetFactory, TemplateFactory, add_templates, store_image
from tests.fixtures.images import png_bytes

pytestmark = pytest.mark.django_db


def _run(run_jobs, **kwargs) -> GenerationJob:
    with run_jobs():
        job = job_create(**kwargs)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    return job


def _export(api, job, fmt: str, tmp_path: Path | None = None, **params) -> zipfile.ZipFile:
    query = "&".join([f"format={fmt}", *(f"{k}={v}" for k, v in params.items())])
    response = api.get(f"/api/jobs/{job.id.hex}/export/?{query}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].endswith(f'-{fmt}.zip"')
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.testzip() is None
    if tmp_path is not None:
        archive.extractall(tmp_path)
    return archive


def _labelled_templates(dataset):
    """Three templates, two sharing the label "thing": categories thing=1, other=2."""
    templates = add_templates(dataset, 3)
    for template, label in zip(templates, ["thing", "other", "thing"], strict=True):
        template.label = label
        template.save(update_fields=["label"])
    return templates


def _mask_of(variant) -> np.ndarray:
    with variant.mask_file.open("rb") as handle:
        return decode_mask_png(handle.read(), expected_size=(variant.width, variant.height))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


# --- Annotate mode -------------------------------------------------------------------------------------


def test_an_annotate_job_writes_only_masks_with_one_encoder_pass_per_image(
    alice, alice_api, photo_dataset, run_jobs
):
    templates = _labelled_templates(photo_dataset)
    segmenter = app_segmenter()
    before = segmenter.encode_calls
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")

    assert segmenter.encode_calls - before == 4 == job.encoder_calls  # one per image, for three templates
    variants = list(job.variants.select_related("image"))
    assert job.variant_count == len(variants) == 12  # one per (image, template)
    assert {(v.image_id, v.template_key) for v in variants} == {
        (image.id, t.id.hex) for image in photo_dataset.images.all() for t in templates
    }
    _, stored = default_storage.listdir(f"variants/{job.id.hex}")
    assert stored and all(name.endswith("-mask.png") for name in stored)  # zero edited images written
    assert len(stored) == 12
    for variant in variants:
        assert not variant.file and variant.sha256 == ""
        [annotation] = variant.annotations
        assert annotation["template_id"] == variant.template_key
        assert annotation["label"] == next(t.label for t in templates if t.id.hex == variant.template_key)
        assert variant.area == annotation["area"] == int(_mask_of(variant).sum())
        assert variant.score == pytest.approx(annotation["score"], abs=1e-6)

    variant = variants[0]
    response = alice_api.get(f"/api/variants/{variant.id.hex}/file/")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert "no image" in response.json()["detail"]
    assert alice_api.get(f"/api/variants/{variant.id.hex}/mask/").status_code == 200
    listed = alice_api.get(f"/api/jobs/{job.id.hex}/variants/").json()["results"]
    assert all(row["urls"]["file"] is None and row["urls"]["mask"] for row in listed)
    assert {row["labels"][0] for row in listed} == {"thing", "other"}

    # The job ZIP carries the masks (the only output) and the manifest.
    body = b"".join(alice_api.get(f"/api/jobs/{job.id.hex}/download/").streaming_content)
    archive = zipfile.ZipFile(io.BytesIO(body))
    manifest = json.loads(archive.read("manifest.json"))
    assert len(manifest["variants"]) == 12 and all(v["file"] is None for v in manifest["variants"])
    assert {v["mask"] for v in manifest["variants"]} | {"manifest.json"} == set(archive.namelist())


def test_annotate_is_accepted_by_the_rest_api(alice_api, photo_dataset, run_jobs):
    add_templates(photo_dataset, 1)
    with run_jobs():
        response = alice_api.post(
            f"/api/datasets/{photo_dataset.id.hex}/jobs/", {"compose": "annotate"}, format="json"
        )
    assert response.status_code == 202
    job = GenerationJob.objects.get(pk=response.json()["id"])
    assert job.compose == "annotate" and job.status == JobStatus.SUCCEEDED  # inline runner
    assert job.variants.count() == 4 and not job.variants.exclude(file="").exists()
    assert response.json()["urls"]["export"] == f"/api/jobs/{job.id.hex}/export/"


# --- COCO ----------------------------------------------------------------------------------------------


def test_coco_loads_with_pycocotools_and_every_rle_is_the_stored_mask(
    alice, alice_api, photo_dataset, run_jobs, tmp_path
):
    from pycocotools.coco import COCO

    _labelled_templates(photo_dataset)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    archive = _export(alice_api, job, "coco", tmp_path)

    assert {"README.txt", "annotations.json"} <= set(archive.namelist())
    coco = COCO(str(tmp_path / "annotations.json"))
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [(1, "thing"), (2, "other")]
    assert len(coco.imgs) == 4
    for image in coco.imgs.values():
        assert (tmp_path / "images" / image["file_name"]).is_file()
    rows = {
        (v.image.filename, v.template_key): v for v in job.variants.select_related("image").filter(area__gt=0)
    }
    assert len(coco.anns) == len(rows) > 0
    by_file = {image["id"]: image["file_name"] for image in coco.imgs.values()}
    snapshot = {t["template_id"]: t for t in job.templates_snapshot}
    matched = set()
    for ann in coco.anns.values():
        assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str)
        candidates = [
            key
            for key, v in rows.items()
            if key[0] == by_file[ann["image_id"]] and v.score == pytest.approx(ann["score"], abs=1e-6)
        ]
        stored = None
        for key in candidates:
            mask = _mask_of(rows[key])
            if np.array_equal(coco.annToMask(ann).astype(bool), mask):
                stored, matched_key = mask, key
        assert stored is not None, "an RLE that decodes to no stored mask"
        matched.add(matched_key)
        label = snapshot[matched_key[1]]["label"]
        assert coco.cats[ann["category_id"]]["name"] == label
        assert ann["area"] == int(stored.sum())
        ys, xs = np.nonzero(stored)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert matched == set(rows)


def test_coco_round_trips_through_supervision(alice, alice_api, photo_dataset, run_jobs, tmp_path):
    import supervision as sv

    _labelled_templates(photo_dataset)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="each")
    _export(alice_api, job, "coco", tmp_path)
    document = json.loads((tmp_path / "annotations.json").read_text())

    dataset = sv.DetectionDataset.from_coco(
        images_directory_path=str(tmp_path / "images"),
        annotations_path=str(tmp_path / "annotations.json"),
        force_masks=True,
    )
    assert dataset.classes == ["thing", "other"]
    from pycocotools import mask as mask_utils

    loaded = {Path(path).name: detections for path, _, detections in dataset}
    seen = 0
    for image in document["images"]:
        detections = loaded[image["file_name"]]
        ours = [a for a in document["annotations"] if a["image_id"] == image["id"]]
        assert len(detections) == len(ours)
        for index, ann in enumerate(ours):
            rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
            assert np.array_equal(detections.mask[index], mask_utils.decode(rle).astype(bool))
            seen += 1
    assert seen == len(document["annotations"]) > 0


# --- YOLO ----------------------------------------------------------------------------------------------


def test_yolo_loads_with_supervision_and_polygons_rasterise_back_to_the_masks(
    alice, alice_api, photo_dataset, run_jobs, tmp_path
):
    import supervision as sv

    templates = _labelled_templates(photo_dataset)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    archive = _export(alice_api, job, "yolo", tmp_path)

    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert data["names"] == {0: "thing", 1: "other"} and data["nc"] == 2
    dataset = sv.DetectionDataset.from_yolo(
        images_directory_path=str(tmp_path / "images"),
        annotations_directory_path=str(tmp_path / "labels"),
        data_yaml_path=str(tmp_path / "data.yaml"),
        force_masks=True,
    )
    assert dataset.classes == ["thing", "other"]
    assert len(dataset) == 4
    labels = {t.id.hex: t.label for t in templates}
    loaded = {Path(path).name: detections for path, _, detections in dataset}
    for variant_image in photo_dataset.images.all():
        stem = variant_image.filename.rsplit(".", 1)[0]
        for line in archive.read(f"labels/{stem}.txt").decode().splitlines():
            values = line.split()
            assert len(values) >= 7 and (len(values) - 1) % 2 == 0  # class + >= 3 points
            assert all(0.0 <= float(v) <= 1.0 for v in values[1:])
        detections = loaded[variant_image.filename]
        for class_id, name in enumerate(dataset.classes):
            ours = np.zeros((variant_image.height, variant_image.width), dtype=bool)
            for variant in job.variants.filter(image=variant_image):
                if labels[variant.template_key] == name:
                    ours |= _mask_of(variant)
            theirs = np.zeros_like(ours)
            for mask in detections.mask[detections.class_id == class_id]:
                theirs |= mask
            assert _iou(ours, theirs) >= 0.95, (variant_image.filename, name)


# --- VOC -----------------------------------------------------------------------------------------------


def test_voc_pixels_are_the_label_index_and_void_where_labels_clash(
    alice, alice_api, photo_dataset, run_jobs, tmp_path
):
    first = add_templates(photo_dataset, 2)
    first[0].label, first[1].label = "cap", "bottle"
    for t in first:
        t.save(update_fields=["label"])
    # Same prompt as "cap" under another label: every "cap" pixel is contested; same label: no clash.
    last = first[1].position
    TemplateFactory(
        dataset=photo_dataset, name="twin", label="lid", points=first[0].points, position=last + 1
    )
    TemplateFactory(
        dataset=photo_dataset, name="same", label="cap", points=first[1].points, position=last + 2
    )
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    archive = _export(alice_api, job, "voc", tmp_path)

    assert archive.read("labelmap.txt").decode().splitlines()[1:5] == [
        "background:0,0,0::",
        "cap:128,0,0::",
        "bottle:0,128,0::",
        "lid:128,128,0::",
    ]
    ids = {"cap": 1, "bottle": 2, "lid": 3}
    snapshot = {t["template_id"]: t["label"] for t in job.templates_snapshot}
    clashes = 0
    for image in photo_dataset.images.all():
        stem = image.filename.rsplit(".", 1)[0]
        pil = Image.open(io.BytesIO(archive.read(f"SegmentationClass/{stem}.png")))
        assert pil.mode == "P"
        values = np.asarray(pil)
        assert archive.read(f"JPEGImages/{image.filename}")
        expected = np.zeros_like(values)
        labels_at = np.zeros((4, *values.shape), dtype=bool)
        for variant in job.variants.filter(image=image):
            labels_at[ids[snapshot[variant.template_key]]] |= _mask_of(variant)
        count = labels_at.sum(axis=0)
        for index in (1, 2, 3):
            expected[labels_at[index] & (count == 1)] = index
        expected[count > 1] = 255
        assert np.array_equal(values, expected)
        clashes += int((values == 255).sum())
    assert clashes > 0


# --- Masks, identity with stack, failures --------------------------------------------------------------


def test_annotate_exports_equal_a_stack_runs_on_the_same_masks(alice, alice_api, photo_dataset, run_jobs):
    _labelled_templates(photo_dataset)
    annotate = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    stack = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="stack", output_format="png")

    a, s = _export(alice_api, annotate, "coco"), _export(alice_api, stack, "coco")
    doc_a, doc_s = json.loads(a.read("annotations.json")), json.loads(s.read("annotations.json"))
    for key in ("images", "categories", "annotations"):
        assert doc_a[key] == doc_s[key]
    assert len(doc_a["annotations"]) > 4
    for fmt, folder in (("yolo", "labels/"), ("voc", "SegmentationClass/")):
        a, s = _export(alice_api, annotate, fmt), _export(alice_api, stack, fmt)
        names = sorted(n for n in a.namelist() if n.startswith(folder))
        assert names == sorted(n for n in s.namelist() if n.startswith(folder)) and len(names) == 4
        assert all(a.read(n) == s.read(n) for n in names)
    a, s = _export(alice_api, annotate, "masks"), _export(alice_api, stack, "masks")
    names = sorted(n for n in a.namelist() if n.startswith("masks/"))
    assert len(names) == 12 and names == sorted(n for n in s.namelist() if n.startswith("masks/"))
    for name in names:
        assert np.array_equal(decode_mask_png(a.read(name)), decode_mask_png(s.read(name)))
    # Only the images differ: the stack's are its edited variants, annotate's the originals.
    a, s = _export(alice_api, annotate, "coco"), _export(alice_api, stack, "coco")
    assert a.read("images/astronaut.png") == photo_dataset.images.get(filename="astronaut.png").file.read()
    assert s.read("images/astronaut.png") != a.read("images/astronaut.png")


def test_a_failed_image_is_left_out_and_listed_in_the_readme(alice, alice_api, photo_dataset, run_jobs):
    add_templates(photo_dataset, 1)
    broken = photo_dataset.images.get(filename="coffee.png")
    default_storage.delete(broken.file.name)
    default_storage.save(broken.file.name, io.BytesIO(b"\x89PNG\r\n\x1a\nnot a png"))
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    assert job.failed_items == 1

    for fmt in ("coco", "yolo", "voc", "masks"):
        archive = _export(alice_api, job, fmt)
        readme = archive.read("README.txt").decode()
        assert "Failed images, left out (1):" in readme and "coffee.png:" in readme
        assert not [n for n in archive.namelist() if "coffee" in n]


# --- API errors and ownership --------------------------------------------------------------------------


def test_a_bad_format_is_a_400_naming_the_choices(alice, alice_api, photo_dataset, run_jobs):
    add_templates(photo_dataset, 1)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice)
    for query in ("", "?format=tiff", "?format=COCO"):
        response = alice_api.get(f"/api/jobs/{job.id.hex}/export/{query}")
        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "invalid_format" and body["field"] == "format"
        assert body["choices"] == ["coco", "yolo", "voc", "masks"]
        assert "coco, yolo, voc, masks" in body["detail"]
    response = alice_api.get(f"/api/jobs/{job.id.hex}/export/?format=coco&exclude_flagged=maybe")
    assert response.status_code == 400 and response.json()["field"] == "exclude_flagged"


def test_bobs_job_exports_are_a_404_for_alice(bob, alice_api, bob_api, make_photo_dataset, run_jobs):
    dataset = make_photo_dataset(bob, names=("astronaut",))
    add_templates(dataset, 1)
    job = _run(run_jobs, dataset=dataset, owner=bob, compose="annotate")
    for fmt in ("coco", "yolo", "voc", "masks"):
        response = alice_api.get(f"/api/jobs/{job.id.hex}/export/?format={fmt}")
        assert response.status_code == 404 and response.json()["error"] == "not_found"
        assert bob_api.get(f"/api/jobs/{job.id.hex}/export/?format={fmt}").status_code == 200
    # Even a bad format answers 404 first: nothing tells alice the job exists.
    assert alice_api.get(f"/api/jobs/{job.id.hex}/export/?format=tiff").status_code == 404


# --- Quality flags -------------------------------------------------------------------------------------


@pytest.fixture
def constructed_masks(monkeypatch):
    """Masks by template name and image size: the reference image is 64 x 48, the others 80 x 60."""

    def fake(segmenter, embedding, templates, *, width, height):
        out = []
        reference = (width, height) == (64, 48)
        for t in templates:
            mask = np.zeros((height, width), dtype=bool)
            if t.name == "whole":
                mask[:] = True
            elif t.name in ("steady", "drift"):
                h, w = height // 3, width // 3
                mask[h : 2 * h, w : 2 * w] = True  # a centred ninth of the image
                if t.name == "drift" and not reference:
                    mask[:] = False
                    mask[1:4, 1:4] = True  # a tiny blob in the corner: the missing-object case
            out.append(TemplateMask(template_id=t.id, mask=mask, score=0.86))
        return out

    monkeypatch.setattr("datasets.jobs.processing.segment_templates", fake)
    monkeypatch.setattr("datasets.jobs.quality.segment_templates", fake)


def test_quality_flags_on_empty_whole_image_and_drifted_masks(
    alice, alice_api, run_jobs, constructed_masks, tmp_path
):
    dataset = DatasetFactory(owner=alice, name="Bottles")
    reference = store_image(dataset, "reference.png", png_bytes(64, 48, seed=1))
    for index in range(2):
        store_image(dataset, f"bottle{index}.png", png_bytes(80, 60, seed=2 + index))
    point = [{"x_norm": 0.5, "y_norm": 0.5, "positive": True}]
    for position, name in enumerate(["steady", "empty", "whole", "drift"]):
        TemplateFactory(
            dataset=dataset, name=name, points=point, position=position, reference_image=reference
        )
    job = _run(run_jobs, dataset=dataset, owner=alice, compose="annotate")

    flags = {
        (v.image.filename, v.template_names[0]): [f["code"] for f in v.flags]
        for v in job.variants.select_related("image")
    }
    for image in ("bottle0.png", "bottle1.png"):
        assert flags[(image, "steady")] == []
        assert flags[(image, "empty")] == ["empty"]
        assert flags[(image, "whole")] == ["whole_image"]
        assert flags[(image, "drift")] == ["area_drift", "centroid_drift"]
    # On its own reference image the drift template matches its reference mask.
    assert flags[("reference.png", "drift")] == [] and flags[("reference.png", "steady")] == []
    drift = job.variants.get(image__filename="bottle0.png", template_names=["drift"])
    assert drift.flags[0]["label"] == "drift" and "reference" in drift.flags[0]["detail"]
    listed = alice_api.get(f"/api/jobs/{job.id.hex}/variants/?template={drift.template_key}").json()
    assert {tuple(f["code"] for f in row["flags"]) for row in listed["results"]} == {
        (),
        ("area_drift", "centroid_drift"),
    }

    # exclude_flagged leaves the flagged annotations out, and lists them.
    archive = _export(alice_api, job, "coco", tmp_path, exclude_flagged=1)
    document = json.loads(archive.read("annotations.json"))
    assert len(document["annotations"]) == 3 + 1  # "steady" on 3 images + "drift" on the reference
    assert all(a["flags"] == [] for a in document["annotations"])
    readme = archive.read("README.txt").decode()
    assert (
        "Flagged annotations left out (8):" in readme
        and "bottle0.png [drift]: area_drift,centroid_drift" in readme
    )
    everything = json.loads(_export(alice_api, job, "coco").read("annotations.json"))
    # Without the filter every non-empty mask is there, flags included ("empty" has nothing to export).
    assert len(everything["annotations"]) == 3 * 3
    assert {tuple(a["flags"]) for a in everything["annotations"]} >= {("whole_image",)}


def test_a_sam_annotate_job_keeps_the_stability_of_every_mask(
    alice, alice_api, make_photo_dataset, run_jobs, use_tiny_sam
):
    dataset = make_photo_dataset(alice, names=("astronaut", "camera"))
    add_templates(dataset, 2)
    segmenter = app_segmenter()
    before = segmenter.encode_calls
    job = _run(run_jobs, dataset=dataset, owner=alice, compose="annotate")

    assert segmenter.encode_calls - before == 2 == job.encoder_calls  # one pass per image, two templates
    for variant in job.variants.all():
        [annotation] = variant.annotations
        assert 0.0 <= annotation["stability"] <= 1.0
        assert variant.stability == pytest.approx(annotation["stability"])
    document = json.loads(_export(alice_api, job, "coco").read("annotations.json"))
    assert all(0.0 <= a["stability"] <= 1.0 for a in document["annotations"])


def test_exports_stream_lazily_one_image_at_a_time(alice, photo_dataset, run_jobs, monkeypatch):
    from datasets.jobs import exports

    add_templates(photo_dataset, 2)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    made: list[str] = []
    real = exports.voc_png
    monkeypatch.setattr(
        exports, "voc_png", lambda image, palette: made.append(image.stem) or real(image, palette)
    )

    chunks = iter(exports.export_zip(job, "voc"))
    first = next(chunks)
    assert made == []  # nothing is rasterised before the stream reaches it
    archive = zipfile.ZipFile(io.BytesIO(first + b"".join(chunks)))
    assert made == ["astronaut", "coffee", "camera", "chelsea"]
    assert archive.testzip() is None and len(archive.namelist()) == 3 + 2 * 4


# --- Audit fixes: names, stable categories, EXIF, data.yaml, streaming, old jobs, order --------------------


def _two_photos(alice):
    """``photo.png`` and ``photo.jpg`` (same stem) in one dataset, one template."""
    dataset = DatasetFactory(owner=alice, name="Stems")
    store_image(dataset, "photo.png", png_bytes(64, 48, seed=3))
    pil = Image.open(io.BytesIO(png_bytes(80, 60, seed=4)))
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=95)
    store_image(dataset, "photo.jpg", buffer.getvalue())
    add_templates(dataset, 1)
    return dataset


def test_same_stem_originals_get_distinct_stems_in_every_format(alice, alice_api, run_jobs):
    dataset = _two_photos(alice)
    job = _run(run_jobs, dataset=dataset, owner=alice, compose="annotate")
    for fmt in ("coco", "yolo", "voc", "masks"):
        names = _export(alice_api, job, fmt).namelist()
        assert len(names) == len(set(names)), fmt
    yolo = _export(alice_api, job, "yolo")
    assert sorted(n for n in yolo.namelist() if n.startswith("labels/")) == [
        "labels/photo-2.txt",
        "labels/photo.txt",
    ]
    assert sorted(n for n in yolo.namelist() if n.startswith("images/")) == [
        "images/photo-2.jpg",
        "images/photo.png",
    ]
    voc = _export(alice_api, job, "voc")
    assert voc.read("ImageSets/Segmentation/default.txt").decode().split() == ["photo", "photo-2"]
    assert {n for n in voc.namelist() if n.startswith("SegmentationClass/")} == {
        "SegmentationClass/photo.png",
        "SegmentationClass/photo-2.png",
    }
    # Each stem's label mask has the size of its own image.
    for stem, image in (("photo", "photo.png"), ("photo-2", "photo.jpg")):
        size = Image.open(io.BytesIO(voc.read(f"SegmentationClass/{stem}.png"))).size
        original = dataset.images.get(filename=image)
        assert size == (original.width, original.height)
    coco = json.loads(_export(alice_api, job, "coco").read("annotations.json"))
    assert [i["file_name"] for i in coco["images"]] == ["photo.png", "photo-2.jpg"]


def _categories_by_annotation(archive) -> dict[tuple[str, int], tuple[int, str]]:
    document = json.loads(archive.read("annotations.json"))
    files = {i["id"]: i["file_name"] for i in document["images"]}
    names = {c["id"]: c["name"] for c in document["categories"]}
    return {
        (files[a["image_id"]], a["id"]): (a["category_id"], names[a["category_id"]])
        for a in document["annotations"]
    }


def test_category_ids_stay_when_a_template_is_deleted_or_a_label_renamed(
    alice, alice_api, photo_dataset, run_jobs, tmp_path
):
    from templates_app.services import template_create, template_delete, template_update

    point = [{"x_norm": 0.5, "y_norm": 0.45, "positive": True}]
    made = [
        template_create(dataset=photo_dataset, points=point, name=name, label=label)
        for name, label in (("first", "cap"), ("second", "bottle"), ("third", "pump"))
    ]
    photo_dataset.refresh_from_db()
    assert photo_dataset.labels == ["cap", "bottle", "pump"]
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="each")
    before = _categories_by_annotation(_export(alice_api, job, "coco"))
    assert {category for category in before.values()} == {(1, "cap"), (2, "bottle"), (3, "pump")}
    yolo_before = _export(alice_api, job, "yolo")

    template_delete(template=made[0])
    template_update(template=made[1], label="flask")
    template_update(template=made[2], name="renamed")  # the name is not the label: nothing changes
    photo_dataset.refresh_from_db()
    assert photo_dataset.labels == ["cap", "bottle", "pump", "flask"]  # appended, never renumbered

    archive = _export(alice_api, job, "coco", tmp_path)
    assert _categories_by_annotation(archive) == before
    document = json.loads(archive.read("annotations.json"))
    assert [(c["id"], c["name"]) for c in document["categories"]] == [
        (1, "cap"),
        (2, "bottle"),
        (3, "pump"),
        (4, "flask"),
    ]
    yolo_after = _export(alice_api, job, "yolo")
    labels = sorted(n for n in yolo_after.namelist() if n.startswith("labels/"))
    assert all(yolo_after.read(n) == yolo_before.read(n) for n in labels)
    data = yaml.safe_load(yolo_after.read("data.yaml"))
    assert data["nc"] == 4 and data["names"] == {0: "cap", 1: "bottle", 2: "pump", 3: "flask"}

    # A new job with the renamed label numbers it 4; the old labels keep 2 and 3.
    job2 = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    assert {c for c in _categories_by_annotation(_export(alice_api, job2, "coco")).values()} == {
        (4, "flask"),
        (3, "pump"),
    }


def test_template_services_register_labels_under_the_dataset_lock(photo_dataset):
    from templates_app.services import template_create, template_update

    point = [{"x_norm": 0.5, "y_norm": 0.45, "positive": True}]
    unnamed = template_create(dataset=photo_dataset, points=point, name="Lid")  # no label: the name
    template_create(dataset=photo_dataset, points=point, name="Other", label="Lid")  # shared: no new id
    template_update(template=unnamed, name="Cover")  # the effective label changes: registered
    template_update(template=unnamed, label="")  # back to the name: already registered
    photo_dataset.refresh_from_db()
    assert photo_dataset.labels == ["Lid", "Cover"]


def test_an_exif_rotated_original_is_exported_upright(alice, alice_api, run_jobs, tmp_path):
    from pycocotools.coco import COCO

    dataset = DatasetFactory(owner=alice, name="Phone photos")
    pil = Image.open(io.BytesIO(png_bytes(80, 48, seed=7)))  # stored 80 x 48, shown 48 x 80
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=95, exif=exif)
    rotated = store_image(dataset, "phone.jpg", buffer.getvalue())
    upright = store_image(dataset, "plain.png", png_bytes(64, 48, seed=8))
    assert (rotated.width, rotated.height) == (48, 80)
    add_templates(dataset, 2)
    job = _run(run_jobs, dataset=dataset, owner=alice, compose="annotate")

    for fmt, folder in (("coco", "images"), ("yolo", "images"), ("voc", "JPEGImages")):
        archive = _export(alice_api, job, fmt, tmp_path / fmt)
        plain = Image.open(io.BytesIO(archive.read(f"{folder}/phone.jpg")))  # no exif_transpose
        assert plain.format == "JPEG" and plain.size == (48, 80)
        assert plain.getexif().get(0x0112, 1) == 1
        # The common case is still a byte copy.
        assert archive.read(f"{folder}/plain.png") == upright.file.open("rb").read()
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    [image] = [i for i in coco.imgs.values() if i["file_name"] == "phone.jpg"]
    assert (image["width"], image["height"]) == (48, 80)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
    assert anns and all(a["segmentation"]["size"] == [80, 48] for a in anns)
    assert coco.annToMask(anns[0]).shape == (80, 48)


def test_data_yaml_has_no_path_so_ultralytics_uses_its_folder(alice, alice_api, photo_dataset, run_jobs):
    add_templates(photo_dataset, 1)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    data = yaml.safe_load(_export(alice_api, job, "yolo").read("data.yaml"))
    assert "path" not in data
    assert (data["train"], data["val"], data["nc"]) == ("images", "images", 1)


def test_coco_is_written_incrementally_reading_annotations_one_chunk_at_a_time(
    alice, photo_dataset, run_jobs, monkeypatch
):
    import re

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from pycocotools.coco import COCO

    from datasets.jobs import exports

    _labelled_templates(photo_dataset)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    monkeypatch.setattr(exports, "ANNOTATION_CHUNK_IMAGES", 1)
    plan = exports.export_plan(job)
    chunks = exports.coco_chunks(plan)
    with CaptureQueriesContext(connection) as queries:
        head = next(chunks)
        assert head.startswith(b'{"info": ')
        assert not [q for q in queries.captured_queries if "datasets_variant" in q["sql"]]  # none read yet
        parts = [head, *chunks]
    assert len(parts) > 4  # info + images ..., categories, one piece per chunk of annotations, the end
    reads = [q["sql"] for q in queries.captured_queries if '"datasets_variant"."annotations"' in q["sql"]]
    assert len(reads) == 4  # one query per image (the chunk size), each for that image's 3 variants only
    for sql in reads:
        assert len(re.findall(r"'[0-9a-f-]{32,36}'", sql)) == 3
    body = b"".join(parts)
    document = json.loads(body)
    assert body == json.dumps(document, ensure_ascii=False).encode()  # json.dumps' bytes, deterministic
    assert [a["id"] for a in document["annotations"]] == list(range(1, len(document["annotations"]) + 1))
    assert b"".join(exports.coco_chunks(exports.export_plan(job))) == body
    path = Path(default_storage.path(".")) / f"coco-{job.id.hex}.json"
    path.write_bytes(body)
    assert len(COCO(str(path)).anns) == len(document["annotations"]) > 4


def test_an_annotate_job_stored_before_annotations_exports_its_stored_masks(
    alice, alice_api, photo_dataset, run_jobs, tmp_path
):
    from pycocotools.coco import COCO

    _labelled_templates(photo_dataset)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    reference = json.loads(_export(alice_api, job, "coco").read("annotations.json"))
    job.variants.update(annotations=[], flags=[])  # as a job finished before 0004 left them

    masks = _export(alice_api, job, "masks")
    names = [n for n in masks.namelist() if n.startswith("masks/")]
    assert len(names) == 12
    for variant in job.variants.select_related("image"):
        stem = variant.image.filename.rsplit(".", 1)[0]
        name = f"masks/{stem}__{variant.template_names[0]}.png"
        assert masks.read(name) == variant.mask_file.open("rb").read()

    document = json.loads(_export(alice_api, job, "coco", tmp_path).read("annotations.json"))
    strip = [
        {k: a[k] for k in ("image_id", "category_id", "segmentation", "area", "bbox")}
        for a in document["annotations"]
    ]
    expected = [
        {k: a[k] for k in ("image_id", "category_id", "segmentation", "area", "bbox")}
        for a in reference["annotations"]
    ]
    assert strip == expected and len(strip) > 4
    assert len(COCO(str(tmp_path / "annotations.json")).anns) == len(strip)
    yolo = _export(alice_api, job, "yolo")
    assert any(yolo.read(n) for n in yolo.namelist() if n.startswith("labels/"))


def test_a_stack_job_stored_before_annotations_is_a_409_except_for_masks(
    alice, alice_api, photo_dataset, run_jobs
):
    add_templates(photo_dataset, 2)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="stack")
    job.variants.update(annotations=[], flags=[])
    for fmt in ("coco", "yolo", "voc"):
        response = alice_api.get(f"/api/jobs/{job.id.hex}/export/?format={fmt}")
        assert response.status_code == 409
        assert response.json() == {
            "error": "export_unavailable",
            "detail": "this job predates per-template annotations; run it again",
        }
    masks = _export(alice_api, job, "masks")
    names = sorted(n for n in masks.namelist() if n.startswith("masks/"))
    assert len(names) == 4
    for variant in job.variants.select_related("image"):
        stem = variant.image.filename.rsplit(".", 1)[0]
        assert masks.read(f"masks/{stem}.png") == variant.mask_file.open("rb").read()


def test_annotations_follow_the_snapshot_order_in_annotate_and_stack_jobs(
    alice, alice_api, photo_dataset, run_jobs
):
    point = [{"x_norm": 0.5, "y_norm": 0.45, "positive": True}]
    others = [
        {"x_norm": 0.3, "y_norm": 0.7, "positive": True},
        {"x_norm": 0.7, "y_norm": 0.3, "positive": True},
    ]
    # Saved in one order, positioned in another: the snapshot (and so every export) follows the positions.
    for name, position, p in (("late", 5, point), ("early", 1, [others[0]]), ("middle", 3, [others[1]])):
        TemplateFactory(dataset=photo_dataset, name=name, label=name, points=p, position=position)
    annotate = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    stack = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="stack", output_format="png")
    assert [t["name"] for t in annotate.templates_snapshot] == ["early", "middle", "late"]
    doc_a = json.loads(_export(alice_api, annotate, "coco").read("annotations.json"))
    doc_s = json.loads(_export(alice_api, stack, "coco").read("annotations.json"))
    assert doc_a["annotations"] == doc_s["annotations"] and len(doc_a["annotations"]) > 4
    names = {c["id"]: c["name"] for c in doc_a["categories"]}
    per_image: dict[int, list[str]] = {}
    for a in doc_a["annotations"]:
        per_image.setdefault(a["image_id"], []).append(names[a["category_id"]])
    order = ["early", "middle", "late"]
    assert all(labels == sorted(labels, key=order.index) for labels in per_image.values())


def test_an_unfinished_job_lists_its_unprocessed_images_in_the_readme(
    alice, alice_api, photo_dataset, run_jobs
):
    add_templates(photo_dataset, 1)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="annotate")
    camera = job.items.get(image__filename="camera.png")
    camera.status = "pending"
    camera.save(update_fields=["status"])
    job.variants.filter(image=camera.image).delete()
    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.CANCELED)
    readme = _export(alice_api, job, "coco").read("README.txt").decode()
    assert "Images not processed (job canceled), left out (1):\n  camera.png\n" in readme
    assert "Images: 3;" in readme
