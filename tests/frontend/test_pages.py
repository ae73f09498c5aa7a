"""Every page renders and every form/htmx action works, through the Django test client (no browser)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from datasets.models import Dataset, GenerationJob, JobStatus
from templates_app.models import Template
from tests.fixtures.images import image_bytes, make_zip

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def test_login_page_and_anonymous_redirects(client, alice_dataset):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b'name="username"' in response.content
    for url in (reverse("dataset-list"), reverse("ui-upload", args=[alice_dataset.public_id])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_login_with_password_then_logout(client, alice):
    response = client.post(
        reverse("login"), {"username": "alice", "password": "correct horse battery staple"}, follow=True
    )
    assert response.status_code == 200
    assert b"Datasets" in response.content and b"alice" in response.content
    response = client.post(reverse("logout"), follow=True)
    assert b'name="password"' in response.content


def test_header_shows_backend_and_links(alice_client, alice):
    body = alice_client.get(reverse("dataset-list")).content.decode()
    assert "classical segmenter (no SAM checkpoint)" in body
    assert f'href="{reverse("ui-help-segmenter")}"' in body  # the chip links to the help panel
    assert f'href="{reverse("api-root")}"' in body
    assert reverse("admin:index") not in body  # alice is not staff
    alice.is_staff = True
    alice.save()
    assert reverse("admin:index") in alice_client.get(reverse("dataset-list")).content.decode()


def test_header_shows_sam_model_when_sam_runs(alice_client, use_tiny_sam):
    body = alice_client.get(reverse("dataset-list")).content.decode()
    assert 'class="backend sam"' in body
    assert "SAM (custom size) · cpu" in body  # the tiny test model is none of the published sizes
    assert "SAM custom" not in body
    help_page = alice_client.get(reverse("ui-help-segmenter")).content.decode()
    assert "Segment Anything" in help_page and "sam_vit_b_01ec64.pth" in help_page


def test_dataset_list_cards_with_strip_counts_and_last_job(
    alice_client, alice_dataset, alice_template, django_capture_on_commit_callbacks
):
    from datasets.jobs.services import job_create

    with django_capture_on_commit_callbacks(execute=True):
        job_create(dataset=alice_dataset, owner=alice_dataset.owner)
    body = alice_client.get(reverse("dataset-list")).content.decode()
    assert "Alice photos" in body
    assert body.count(reverse("image-thumbnail", args=[alice_dataset.images.first().public_id])) == 1
    assert "<b>3</b> images" in body and "<b>1</b> template" in body and "<b>1</b> job" in body
    assert "status-succeeded" in body


def test_create_rename_delete_dataset(alice_client, alice):
    response = alice_client.post(reverse("ui-dataset-new"), {"name": "  Cats  "})
    dataset = Dataset.objects.get(owner=alice)
    assert dataset.name == "Cats"
    assert response["Location"] == reverse("ui-upload", args=[dataset.public_id])

    response = alice_client.post(
        reverse("ui-dataset-rename", args=[dataset.public_id]), {"name": "Dogs"}, **HTMX
    )
    assert response.status_code == 200
    assert b"<h1>Dogs</h1>" in response.content
    response = alice_client.post(
        reverse("ui-dataset-rename", args=[dataset.public_id]), {"name": " "}, **HTMX
    )
    assert response.status_code == 200  # the fragment carries the refusal (never a 400 under htmx)
    assert b'role="alert"' in response.content and b"<h1>Dogs</h1>" in response.content

    response = alice_client.post(reverse("ui-dataset-delete", args=[dataset.public_id]), **HTMX)
    assert response.headers["HX-Redirect"] == reverse("dataset-list")
    assert not Dataset.objects.filter(pk=dataset.pk).exists()


def test_create_dataset_without_name_shows_message(alice_client):
    response = alice_client.post(reverse("ui-dataset-new"), {"name": ""}, follow=True)
    assert b"Give the dataset a name" in response.content


def test_upload_page_and_upload_with_a_rejected_file(alice_client, alice_dataset, photo_png):
    url = reverse("ui-upload", args=[alice_dataset.public_id])
    page = alice_client.get(url).content.decode()
    assert 'id="dropzone"' in page and "No images yet" in page
    files = [
        SimpleUploadedFile("astronaut_pass.png", photo_png["astronaut"], content_type="image/png"),
        SimpleUploadedFile("camera_fail.png", photo_png["camera"], content_type="image/png"),
        SimpleUploadedFile("notes.png", b"this is not an image", content_type="image/png"),
    ]
    response = alice_client.post(url, {"images": files}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Added 2 images, rejected 1" in body
    assert "<b>notes.png</b>" in body
    assert 'id="image-grid" hx-swap-oob="true"' in body
    assert body.count('class="image-tile"') == 2
    assert 'class="class-select class-pass"' in body and 'class="class-select class-fail"' in body
    assert '<span class="count" id="step-image-count" hx-swap-oob="true">2 images</span>' in body


def test_upload_errors_are_messages(alice_client, alice_dataset, settings, photo_png):
    url = reverse("ui-upload", args=[alice_dataset.public_id])
    response = alice_client.post(url, {}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert response.status_code == 400
    assert b"Choose image files or one ZIP archive" in response.content
    settings.MAX_IMAGES_PER_DATASET = 1
    files = [SimpleUploadedFile(f"{n}.png", photo_png[n]) for n in ("astronaut", "coffee")]
    response = alice_client.post(url, {"images": files}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert response.status_code == 400
    assert b"Too many images: this upload would bring the dataset to 2; the limit is 1." in response.content
    response = alice_client.post(
        url, {"zip": SimpleUploadedFile("a.zip", b"not a zip")}, HTTP_X_REQUESTED_WITH="XMLHttpRequest"
    )
    assert b"The ZIP archive was refused" in response.content


def test_upload_zip(alice_client, alice_dataset, photo_png):
    import zipfile

    archive = make_zip(
        {"photos/coffee.png": photo_png["coffee"], "photos/chelsea.png": photo_png["chelsea"]},
        compression=zipfile.ZIP_STORED,
    )
    url = reverse("ui-upload", args=[alice_dataset.public_id])
    response = alice_client.post(
        url,
        {"zip": SimpleUploadedFile("photos.zip", archive)},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )
    assert b"Added 2 images" in response.content
    # without JavaScript the form posts and redirects back with a message
    response = alice_client.post(
        url, {"images": [SimpleUploadedFile("x.png", photo_png["camera"])]}, follow=True
    )
    assert b"Added 1 image." in response.content
    # the same file again is a neutral skip, not a red error
    response = alice_client.post(
        url,
        {"images": [SimpleUploadedFile("again.png", photo_png["camera"])]},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )
    body = response.content.decode()
    assert "Added 0 images, skipped 1 duplicate." in body
    assert '<ul class="skipped"' in body and "again.png" in body and 'class="rejected"' not in body
    assert "again.png</b> — already in the dataset (same content), skipped" in body


def test_a_duplicate_within_one_upload_is_worded_as_such(alice_client, alice_dataset, photo_png):
    url = reverse("ui-upload", args=[alice_dataset.public_id])
    response = alice_client.post(
        url,
        {
            "images": [
                SimpleUploadedFile("first.png", photo_png["coffee"]),
                SimpleUploadedFile("copy.png", photo_png["coffee"]),
            ]
        },
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )
    body = response.content.decode()
    assert "Added 1 image, skipped 1 duplicate." in body
    assert "copy.png</b> — a duplicate of first.png in this upload (same content), skipped" in body
    assert "already in the dataset" not in body


def test_image_class_and_delete(alice_client, alice_dataset, alice_images):
    image = alice_images[0]
    url = reverse("ui-image-class", args=[alice_dataset.public_id, image.public_id])
    response = alice_client.post(url, {"image_class": "fail"}, **HTMX)
    assert response.status_code == 200
    assert b'class="class-select class-fail"' in response.content
    image.refresh_from_db()
    assert image.image_class == "fail"
    refused = alice_client.post(url, {"image_class": "maybe"}, **HTMX)
    assert refused.status_code == 200 and b'role="alert"' in refused.content
    image.refresh_from_db()
    assert image.image_class == "fail"

    response = alice_client.post(
        reverse("ui-image-delete", args=[alice_dataset.public_id, image.public_id]), **HTMX
    )
    assert response.status_code == 200
    assert b"2 images" in response.content
    assert alice_dataset.images.count() == 2


def test_templates_page_renders_reference_and_saved_templates(alice_client, alice_dataset, alice_template):
    url = reverse("ui-templates", args=[alice_dataset.public_id])
    body = alice_client.get(url).content.decode()
    assert 'id="tpl-canvas"' in body
    assert reverse("image-file", args=[alice_template.reference_image.public_id]) in body  # PNG: shown as is
    assert "Face" in body and "1 point" in body
    assert reverse("ui-template-mask", args=[alice_dataset.public_id, alice_template.public_id]) in body
    # filter and explicit image choice
    other = alice_dataset.images.order_by("position")[2]
    body = alice_client.get(url, {"image": other.public_id, "class": "pass"}).content.decode()
    assert (
        f'data-segment-url="{reverse("ui-image-segment", args=[alice_dataset.public_id, other.public_id])}"'
        in body
    )
    # editing loads the template's points
    body = alice_client.get(url, {"template": alice_template.public_id}).content.decode()
    assert 'id="initial-points"' in body and '"x_norm": 0.5' in body
    assert "Edit “Face”" in body


def test_templates_page_without_images(alice_client, alice_dataset):
    body = alice_client.get(reverse("ui-templates", args=[alice_dataset.public_id])).content.decode()
    assert "No images yet" in body and 'id="tpl-canvas"' not in body


def _mask(candidate) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(candidate["mask"])))) > 0


def test_segment_endpoint_returns_candidates(alice_client, alice_dataset, alice_images):
    image = alice_images[0]
    url = reverse("ui-image-segment", args=[alice_dataset.public_id, image.public_id])
    body = {"points": [{"x_norm": 0.5, "y_norm": 0.3, "positive": True}]}
    response = alice_client.post(url, json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    data = response.json()
    assert (data["width"], data["height"]) == (image.width, image.height)
    assert 1 <= len(data["candidates"]) <= 3
    scores = [c["score"] for c in data["candidates"]]
    assert scores == sorted(scores, reverse=True)
    mask = _mask(data["candidates"][0])
    assert mask.shape == (image.height, image.width) and mask.any()

    bad = {"points": [{"x_norm": 1.5, "y_norm": 0.3, "positive": True}]}
    response = alice_client.post(url, json.dumps(bad), content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_points"
    response = alice_client.post(url, "{nope", content_type="application/json")
    assert response.status_code == 400
    response = alice_client.post(url, json.dumps({"points": []}), content_type="application/json")
    assert response.json()["error"] == "no_points"


def test_segment_endpoint_with_tiny_sam(alice_client, alice_dataset, alice_images, use_tiny_sam):
    image = alice_images[1]
    url = reverse("ui-image-segment", args=[alice_dataset.public_id, image.public_id])
    body = {
        "points": [
            {"x_norm": 0.4, "y_norm": 0.5, "positive": True},
            {"x_norm": 0.1, "y_norm": 0.1, "positive": False},
        ]
    }
    data = alice_client.post(url, json.dumps(body), content_type="application/json").json()
    assert len(data["candidates"]) == 3
    assert _mask(data["candidates"][0]).shape == (image.height, image.width)


def test_save_update_delete_template(alice_client, alice_dataset, alice_images):
    url = reverse("ui-template-save", args=[alice_dataset.public_id])
    points = [
        {"x_norm": 0.5, "y_norm": 0.4, "positive": True},
        {"x_norm": 0.1, "y_norm": 0.9, "positive": False},
    ]
    response = alice_client.post(
        url,
        {
            "points": json.dumps(points),
            "name": "",
            "image_class": "pass",
            "reference_image": alice_images[0].public_id,
        },
        follow=True,
    )
    template = Template.objects.get(dataset=alice_dataset)
    assert template.name == "Template 1" and template.image_class == "pass" and template.points_count == 2
    assert "Saved template “Template 1”" in response.content.decode()

    response = alice_client.post(
        url,
        {"template": template.public_id, "points": json.dumps(points[:1]), "name": "Hat", "image_class": ""},
        follow=True,
    )
    template.refresh_from_db()
    assert template.name == "Hat" and template.points_count == 1 and template.image_class == ""

    response = alice_client.post(url, {"points": json.dumps([points[1]])}, follow=True)
    assert "The template was not saved" in response.content.decode()
    response = alice_client.post(url, {"points": "[oops"}, follow=True)
    assert "The template was not saved" in response.content.decode()

    mask = alice_client.get(reverse("ui-template-mask", args=[alice_dataset.public_id, template.public_id]))
    assert mask.status_code == 204  # the update removed the reference image
    response = alice_client.post(
        reverse("ui-template-delete", args=[alice_dataset.public_id, template.public_id]), **HTMX
    )
    assert response.status_code == 200 and response.content == b""
    assert not Template.objects.filter(pk=template.pk).exists()


def test_template_mask_thumbnail(alice_client, alice_dataset, alice_template):
    url = reverse("ui-template-mask", args=[alice_dataset.public_id, alice_template.public_id])
    response = alice_client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert max(image.size) <= 176
    assert alice_client.get(url, HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304


def test_generate_page_has_sliders_with_meaning(alice_client, alice_dataset, alice_template):
    body = alice_client.get(reverse("ui-generate", args=[alice_dataset.public_id])).content.decode()
    hexid = alice_template.public_id
    assert body.count('type="range"') == 8 and body.count('type="number"') == 8
    assert f'name="t-{hexid}-brightness"' in body and 'value="0.3"' in body
    assert "positive brightens mid-tones" in body
    assert 'name="compose" value="stack" checked' in body
    assert 'id="preview"' in body and 'hx-sync="this:replace"' in body


def test_generate_page_without_templates(alice_client, alice_dataset, alice_images):
    body = alice_client.get(reverse("ui-generate", args=[alice_dataset.public_id])).content.decode()
    assert "No templates yet" in body


def test_preview_changes_with_the_sliders(alice_client, alice_dataset, alice_template):
    url = reverse("ui-preview", args=[alice_dataset.public_id])
    hexid = alice_template.public_id
    image = alice_template.reference_image.public_id

    def preview(**edits):
        data = {"preview_image": image, "compose": "stack"}
        data.update({f"t-{hexid}-{k}": v for k, v in edits.items()})
        return alice_client.post(url, data, **HTMX)

    first = preview(brightness="0.3")
    second = preview(brightness="-0.5", contrast="0.4")
    assert first.status_code == second.status_code == 200
    src = [r.content.decode().split('id="preview-after" src="')[1].split('"')[0] for r in (first, second)]
    assert src[0].startswith("data:image/jpeg;base64,") and src[0] != src[1]
    bad = preview(gamma="7")
    # 200 with the error in the fragment (a 400 is swapped in as the whole page by django-htmx's DEBUG script)
    body = bad.content.decode()
    assert bad.status_code == 200 and 'data-error="true"' in body and 'role="alert"' in body
    assert f'id="e-{hexid}-gamma-error" role="alert" hx-swap-oob="true">gamma: must be between' in body
    none = alice_client.post(url, {"preview_image": ""}, **HTMX)
    assert b"Upload images" in none.content


def test_preview_when_no_template_applies(alice_client, alice_dataset, alice_template):
    from templates_app.services import template_update

    template_update(template=alice_template, image_class="fail")
    response = alice_client.post(
        reverse("ui-preview", args=[alice_dataset.public_id]),
        {"preview_image": alice_template.reference_image.public_id},
        **HTMX,
    )
    assert b"No template applies" in response.content


def test_edits_autosave(alice_client, alice_dataset, alice_template):
    url = reverse("ui-template-edits", args=[alice_dataset.public_id, alice_template.public_id])
    hexid = alice_template.public_id
    response = alice_client.post(url, {f"t-{hexid}-gamma": "0.5", f"t-{hexid}-opacity": "1"}, **HTMX)
    assert response.status_code == 200 and "Saved ✓" in response.content.decode()
    alice_template.refresh_from_db()
    assert alice_template.default_edits == {"gamma": 0.5}
    response = alice_client.post(url, {f"t-{hexid}-noise": "3"}, **HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and 'data-error="true"' in body and "Not saved: noise" in body
    assert f'id="e-{hexid}-noise-error" role="alert" hx-swap-oob="true">noise: must be between' in body
    alice_template.refresh_from_db()
    assert alice_template.default_edits == {"gamma": 0.5}  # nothing lost
    ok = alice_client.post(url, {f"t-{hexid}-noise": "0.1"}, **HTMX).content.decode()
    assert f'id="e-{hexid}-noise-error" role="alert" hx-swap-oob="true"></span>' in ok  # the error is cleared


def test_generate_creates_a_job_and_the_job_page_shows_it(
    alice_client, alice_dataset, alice_template, django_capture_on_commit_callbacks
):
    hexid = alice_template.public_id
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            reverse("ui-generate", args=[alice_dataset.public_id]),
            {"compose": "each", "output_format": "jpeg", "export_mask": "on", f"t-{hexid}-saturation": "0.5"},
        )
    job = GenerationJob.objects.get(dataset=alice_dataset)
    assert response["Location"] == reverse("ui-job", args=[job.public_id])
    assert job.status == JobStatus.SUCCEEDED  # the inline runner of the tests
    assert job.compose == "each" and job.output_format == "jpeg" and job.export_mask and job.source == "ui"
    assert job.templates_snapshot[0]["edits"]["saturation"] == 0.5

    body = alice_client.get(response["Location"]).content.decode()
    assert "3 / 3" in body and "status-succeeded" in body
    assert body.count('class="item-tile item-succeeded"') == 3
    # One per tile, plus one per flagged variant in "Needs review".
    assert body.count("data-lightbox") == 3 + job.variants.exclude(flags=[]).count()
    assert reverse("api-job-download", args=[job.public_id]) in body
    assert "sse-connect" not in body  # finished: nothing to listen to
    assert (
        "saturation 0.5" in body and "Timings" in body and "each: one variant per image and template" in body
    )

    jobs = alice_client.get(reverse("ui-jobs", args=[alice_dataset.public_id])).content.decode()
    assert reverse("ui-job", args=[job.public_id]) in jobs


def test_generate_refused_shows_message(alice_client, alice_dataset, alice_template):
    hexid = alice_template.public_id
    response = alice_client.post(
        reverse("ui-generate", args=[alice_dataset.public_id]),
        {"compose": "stack", "output_format": "png", f"t-{hexid}-hue": "999"},
        follow=True,
    )
    assert "Could not start the job" in response.content.decode()
    response = alice_client.post(
        reverse("ui-generate", args=[alice_dataset.public_id]),
        {"compose": "x", "output_format": "png"},
        follow=True,
    )
    assert "Could not start the job" in response.content.decode()


def test_running_job_page_connects_to_its_stream(alice_client, alice_dataset, alice_template, settings):
    from datasets.jobs.events import job_channel
    from datasets.jobs.services import job_create

    settings.JOB_RUNNER = "embedded"
    from unittest import mock

    with mock.patch("datasets.jobs.runners.EmbeddedRunner.enqueue"):
        job = job_create(dataset=alice_dataset, owner=alice_dataset.owner)
    body = alice_client.get(reverse("ui-job", args=[job.public_id])).content.decode()
    assert (
        f'sse-connect="{reverse("ui-job-events", args=[job.public_id])}?lastEventId={job_channel(job.id)}%3A'
        in body
    )
    assert 'sse-swap="html-status,html-item,html-done"' in body
    assert body.count("waiting") == 3
    assert "Cancel job" in body

    response = alice_client.post(reverse("ui-job-cancel", args=[job.public_id]), follow=True)
    assert "Cancel requested" in response.content.decode()
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED
    response = alice_client.post(reverse("ui-job-cancel", args=[job.public_id]), follow=True)
    assert "already canceled" in response.content.decode()
    with mock.patch("datasets.jobs.runners.EmbeddedRunner.enqueue"):
        response = alice_client.post(reverse("ui-job-retry", args=[job.public_id]), follow=True)
    assert "queued again" in response.content.decode()


def test_tiff_references_are_served_as_png_for_the_canvas(alice_client, alice_dataset, photos):
    from datasets.services.uploads import images_upload

    image = images_upload(
        dataset=alice_dataset,
        files=[
            SimpleUploadedFile("scan.tif", image_bytes(photos["coffee"], "TIFF"), content_type="image/tiff")
        ],
    ).created[0]
    display = reverse("ui-image-display", args=[alice_dataset.public_id, image.public_id])
    body = alice_client.get(reverse("ui-templates", args=[alice_dataset.public_id])).content.decode()
    assert f'data-image-url="{display}"' in body
    response = alice_client.get(display)
    assert response["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (image.width, image.height)


def test_annotate_from_the_ui_then_review_and_export_from_the_job_page(
    alice_client, bob, client, alice_dataset, alice_template, settings, django_capture_on_commit_callbacks
):
    settings.QUALITY_MAX_AREA_FRACTION = 0.0  # every non-empty mask "covers most of the image": all flagged
    generate = alice_client.get(reverse("ui-generate", args=[alice_dataset.public_id])).content.decode()
    assert 'value="annotate"' in generate and "Annotate only" in generate
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            reverse("ui-generate", args=[alice_dataset.public_id]),
            {"compose": "annotate", "output_format": "png"},
        )
    job = GenerationJob.objects.get(dataset=alice_dataset)
    assert job.compose == "annotate" and job.status == JobStatus.SUCCEEDED
    assert not job.variants.exclude(file="").exists()

    body = alice_client.get(response["Location"]).content.decode()
    export_url = reverse("api-job-export", args=[job.public_id])
    assert f'action="{export_url}"' in body and '<option value="yolo">' in body
    assert 'name="exclude_flagged"' in body
    # Tiles show the original image under its mask: an annotation has no image file of its own.
    assert reverse("api-variant-file", args=[job.variants.first().id.hex]) not in body
    flagged = job.variants.exclude(flags=[]).count()
    assert flagged == 3 and f"Needs review ({flagged})" in body
    assert body.index('id="needs-review"') < body.index('id="job-grid"')
    assert "covers" in body and "of the image" in body

    client.force_login(bob)
    assert client.get(response["Location"]).status_code == 404
    assert client.get(f"{export_url}?format=coco").status_code == 404
