"""``manage.py generate``: a folder or ZIP of photos and a templates file in, a checked ZIP out."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from django.core.management import CommandError, call_command

from datasets.models import Dataset, GenerationJob
from tests.fixtures.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

TEMPLATES = [
    {"name": "centre", "points": [{"x_norm": 0.5, "y_norm": 0.45, "positive": True}], "edits": {"hue": 40}},
    {
        "name": "corner",
        "class": "fail",
        "points": [{"x_norm": 0.3, "y_norm": 0.7}, {"x_norm": 0.9, "y_norm": 0.1, "positive": False}],
        "edits": {"brightness": 0.3},
    },
]


@pytest.fixture
def inputs(tmp_path, photo_png_160):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut_pass", "coffee_fail", "camera"):
        (folder / f"{name}.png").write_bytes(photo_png_160[name.split("_")[0]])
    (folder / "notes.txt").write_text("not an image")
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps(TEMPLATES))
    return folder, templates


def test_a_folder_run_writes_a_zip_checked_against_its_manifest(inputs, tmp_path, capsys):
    folder, templates = inputs
    out = tmp_path / "variants.zip"
    admin = UserFactory(username="root", is_superuser=True, is_staff=True)
    call_command(
        "generate", "--images", str(folder), "--templates", str(templates), "--out", str(out),
        "--compose", "each", "--export-mask", "--no-progress",
    )  # fmt: skip
    job = GenerationJob.objects.get()
    assert job.owner == admin and job.source == "cli" and job.status == "succeeded"
    # "corner" is for fail images: coffee_fail and the unclassed camera take both templates, astronaut_pass one.
    assert (job.total_items, job.variant_count) == (3, 5)
    archive = zipfile.ZipFile(out)
    manifest = json.loads(archive.read("manifest.json"))
    assert sorted(v["file"] for v in manifest["variants"]) == [
        "astronaut_pass__centre.png",
        "camera__centre.png",
        "camera__corner.png",
        "coffee_fail__centre.png",
        "coffee_fail__corner.png",
    ]
    for entry in manifest["variants"]:
        assert hashlib.sha256(archive.read(entry["file"])).hexdigest() == entry["sha256"]
        assert entry["mask"] in archive.namelist()
    printed = capsys.readouterr()
    assert f"job {job.id.hex} succeeded: 3 succeeded, 0 failed" in printed.out
    assert "3 encoder calls" in printed.out and f"wrote {out}" in printed.out


def test_a_zip_of_images_and_a_named_user(inputs, tmp_path):
    folder, templates = inputs
    archive_path = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"set/{path.name}")
    carol = UserFactory(username="carol")
    out = tmp_path / "out.zip"
    call_command(
        "generate", "--images", str(archive_path), "--templates", str(templates), "--out", str(out),
        "--user", "carol", "--format", "jpeg", "--no-progress",
    )  # fmt: skip
    job = GenerationJob.objects.get()
    assert job.owner == carol and job.output_format == "jpeg" and job.variant_count == 3
    names = zipfile.ZipFile(io.BytesIO(out.read_bytes())).namelist()
    assert sorted(names) == ["astronaut_pass.jpg", "camera.jpg", "coffee_fail.jpg", "manifest.json"]


def test_without_any_superuser_a_cli_user_owns_the_run(inputs, tmp_path):
    folder, templates = inputs
    call_command(
        "generate", "--images", str(folder), "--templates", str(templates), "--out", str(tmp_path / "o.zip"),
        "--no-progress",
    )  # fmt: skip
    assert Dataset.objects.get().owner.username == "cli"


def test_the_progress_bar_reports_images(inputs, tmp_path, capsys):
    folder, templates = inputs
    call_command(
        "generate", "--images", str(folder), "--templates", str(templates), "--out", str(tmp_path / "o.zip")
    )
    err = capsys.readouterr().err
    assert "3/3" in err and "img/s" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('[{"name": "x", "points": []}]', "template #1: no_points"),
        ('[{"points": [{"x_norm": 2, "y_norm": 0.5}]}]', "template #1: invalid_points"),
        ('[{"points": [], "box": [0.1, 0.1, 0.1, 0.5]}]', "template #1: invalid_box"),
        ('[{"box": [0.1, 0.1, 0.5, 0.5], "mask_choice": 7}]', "template #1: invalid_mask_choice"),
        (
            '[{"points": [{"x_norm": 0.5, "y_norm": 0.5}], "edits": {"hue": 999}}]',
            "template #1: invalid_edits",
        ),
    ],
)
def test_a_bad_templates_file_is_explained(inputs, tmp_path, content, message):
    folder, _ = inputs
    templates = tmp_path / "bad.json"
    templates.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command(
            "generate", "--images", str(folder), "--templates", str(templates), "--out", str(tmp_path / "o.zip"),
            "--no-progress",
        )  # fmt: skip
    assert not GenerationJob.objects.exists()


def test_a_box_template_from_the_file_is_saved_and_runs(inputs, tmp_path):
    folder, _ = inputs
    templates = tmp_path / "box.json"
    templates.write_text(json.dumps([{"name": "boxed", "box": [0.2, 0.2, 0.8, 0.8], "mask_choice": 1}]))
    call_command(
        "generate", "--images", str(folder), "--templates", str(templates), "--out", str(tmp_path / "o.zip"),
        "--no-progress",
    )  # fmt: skip
    job = GenerationJob.objects.get()
    assert job.status == "succeeded" and job.variant_count == 3
    [snapshot] = job.templates_snapshot
    assert (
        snapshot["box"] == [0.2, 0.2, 0.8, 0.8]
        and snapshot["mask_choice"] == "1"
        and snapshot["points"] == []
    )


def test_the_help_documents_the_templates_format(capsys):
    with pytest.raises(SystemExit):
        call_command("generate", "--help")
    out = capsys.readouterr().out
    assert '"x_norm"' in out and '"class"' in out and "--export-mask" in out
    assert '"box"' in out and '"mask_choice"' in out


def test_annotate_with_exports_writes_masks_only_and_the_training_files(inputs, tmp_path):
    from pycocotools.coco import COCO

    folder, templates = inputs
    labelled = [dict(TEMPLATES[0], label="part"), dict(TEMPLATES[1], label="part")]
    templates.write_text(json.dumps(labelled))
    out = tmp_path / "run.zip"
    call_command(
        "generate", "--images", str(folder), "--templates", str(templates), "--out", str(out),
        "--annotate", "--export", "coco, yolo", "--no-progress",
    )  # fmt: skip
    job = GenerationJob.objects.get()
    assert job.compose == "annotate" and job.variant_count == 5
    assert not job.variants.exclude(file="").exists()
    assert {v["file"] for v in json.loads(zipfile.ZipFile(out).read("manifest.json"))["variants"]} == {None}

    coco_dir = tmp_path / "coco"
    zipfile.ZipFile(tmp_path / "run-coco.zip").extractall(coco_dir)
    coco = COCO(str(coco_dir / "annotations.json"))
    assert [c["name"] for c in coco.cats.values()] == ["part"] and len(coco.imgs) == 3
    yolo = zipfile.ZipFile(tmp_path / "run-yolo.zip")
    assert (
        "data.yaml" in yolo.namelist() and len([n for n in yolo.namelist() if n.startswith("labels/")]) == 3
    )
    assert not (tmp_path / "run-voc.zip").exists()


def test_an_unknown_export_format_stops_before_any_work(inputs, tmp_path):
    folder, templates = inputs
    with pytest.raises(CommandError, match="unknown format 'tiff'; choose from coco, yolo, voc, masks"):
        call_command(
            "generate", "--images", str(folder), "--templates", str(templates),
            "--out", str(tmp_path / "x.zip"), "--export", "coco,tiff", "--no-progress",
        )  # fmt: skip
    assert not Dataset.objects.exists()
