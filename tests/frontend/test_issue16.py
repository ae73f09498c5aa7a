"""What a first-time user meets (issue 16), through the test client: live figures, kept settings, counts,
names for people, grayscale notes, one-tab-stop reference strip, slug ZIP names."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from frontend.presenters import segmenter_chip, segmenter_label
from tests.fixtures.factories import upload_photos

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.mark.django_db(transaction=True)
def test_live_item_fragments_carry_the_parameters_card_with_every_figure(alice_dataset, alice_template):
    from datasets.jobs.services import job_create
    from datasets.models import GenerationJob
    from frontend import live
    from tests.fixtures.page_stream import page_events

    job = job_create(dataset=alice_dataset, owner=alice_dataset.owner)
    items = [html for name, _, html in page_events(job) if name == "html-item"]
    assert len(items) == 3 and all('id="job-params"' in html for html in items)
    # Each item event re-renders the card from the job row as it is then: replay the row's states.
    job = GenerationJob.objects.select_related("dataset").get(pk=job.pk)
    for n in (1, 2, 3):
        GenerationJob.objects.filter(pk=job.pk).update(encoder_calls=n, cache_hits=3 - n, succeeded_items=n)
        job.refresh_from_db()
        html = live.render_item(job, {"index": n - 1, "status": "succeeded"})
        params = html[html.index('id="job-params"') :]
        segmenter = re.search(r'id="job-segmenter"[^>]*>([^<]*)<', params).group(1)
        assert segmenter == "classical"  # a name for people, not "classical:-:classical-v1"
        encoder = re.search(r'id="job-encoder">([^<]*)<', params).group(1)
        assert (
            encoder == f"{n} call{'s' if n > 1 else ''} · {3 - n} cached embedding{'' if 3 - n == 1 else 's'}"
        )
        assert f"{n} / 3" in html  # the progress card in the same event


def test_segmenter_names_for_people():
    assert segmenter_label("classical:-:classical-v1") == "classical"
    assert segmenter_label("sam:vit_b:sam-v1-fp16:vit_b:abc") == "SAM ViT-B"
    assert segmenter_label("sam:custom:x") == "SAM (custom size)"
    assert segmenter_label("") == ""
    chip = segmenter_chip(
        {"backend": "sam", "model": "vit_h", "checkpoint": "sam_vit_h.pth", "device": "cuda"}
    )
    assert chip["text"] == "SAM ViT-H · cuda"
    assert segmenter_chip({"backend": "sam", "checkpoint": None})["kind"] == "missing"


def test_compose_format_and_masks_are_kept_across_reloads(alice_client, alice_dataset, alice_template):
    page = reverse("ui-generate", args=[alice_dataset.public_id])
    body = alice_client.get(page).content.decode()
    assert 'name="compose" value="stack" checked' in body
    url = reverse("ui-generate-settings", args=[alice_dataset.public_id])
    assert f'hx-post="{url}"' in body
    response = alice_client.post(
        url, {"compose": "each", "output_format": "webp", "export_mask": "on"}, **HTMX
    )
    assert response.status_code == 204
    body = alice_client.get(page).content.decode()
    assert 'name="compose" value="each" checked' in body
    assert '<option value="webp" selected>' in body
    assert 'name="export_mask" checked' in body
    bad = alice_client.post(url, {"compose": "sideways", "output_format": "png"}, **HTMX)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_settings"
    assert 'name="compose" value="each" checked' in alice_client.get(page).content.decode()  # nothing lost


def test_bob_cannot_touch_alices_generate_settings(bob_client, alice_dataset):
    url = reverse("ui-generate-settings", args=[alice_dataset.public_id])
    assert bob_client.post(url, {"compose": "each", "output_format": "png"}).status_code == 404


def test_generate_button_says_images_and_variants_in_each_mode(alice_client, alice_dataset, alice_template):
    from templates_app.services import template_create

    # The photos are *_pass.png: a pass template and a classless one apply to all three, a fail one to none.
    for image_class in ("pass", "fail"):
        template_create(
            dataset=alice_dataset,
            points=[{"x_norm": 0.5, "y_norm": 0.5, "positive": True}],
            image_class=image_class,
        )
    body = alice_client.get(reverse("ui-generate", args=[alice_dataset.public_id])).content.decode()
    assert 'data-label-stack="Generate 3 images → 3 variants"' in body
    assert 'data-label-each="Generate 3 images → 6 variants"' in body
    assert '<span class="label">Generate 3 images → 3 variants</span>' in body
    assert "pass and unclassed images" in body or "pass and unclassed" in body


def test_sliders_show_min_neutral_max_and_errors_are_tied_to_their_box(
    alice_client, alice_dataset, alice_template
):
    body = alice_client.get(reverse("ui-generate", args=[alice_dataset.public_id])).content.decode()
    box = f"e-{alice_template.public_id}-gamma"
    assert f'aria-describedby="{box}-hint {box}-error"' in body
    assert f'<span class="field-error" id="{box}-error" role="alert"></span>' in body
    scale = re.search(rf'<div class="scale" id="{box}-scale"[^>]*>(.*?)</div>', body).group(1)
    assert '<span class="min">-0.9</span>' in scale and '<span class="neutral"' in scale
    noise = re.search(rf'id="e-{alice_template.public_id}-noise-scale"[^>]*>(.*?)</div>', body).group(1)
    assert '<span class="min neutral-end">0</span>' in noise and 'class="neutral"' not in noise
    assert '<span class="max">2</span>' in scale
    assert 'style="' not in body  # CSP: no inline styles


def test_grayscale_dataset_disables_hue_and_saturation_and_keeps_their_values(alice_client, alice, photo_png):
    from datasets.services.datasets import dataset_create
    from templates_app.services import template_create

    dataset = dataset_create(owner=alice, name="Gray parts")
    (image,) = upload_photos(dataset, photo_png, names=("camera",))
    template = template_create(
        dataset=dataset,
        points=[{"x_norm": 0.5, "y_norm": 0.5, "positive": True}],
        reference_image=image,
        default_edits={"hue": 30},
    )
    body = alice_client.get(reverse("ui-generate", args=[dataset.public_id])).content.decode()
    assert "Every image of this dataset is grayscale" in body
    hue = f"t-{template.public_id}-hue"
    assert re.search(
        rf'<input type="number" id="e-{template.public_id}-hue" name="{hue}"[^>]* disabled>', body
    )
    assert f'<input type="hidden" name="{hue}" value="30">' in body  # autosave keeps the stored value
    assert re.search(rf'name="t-{template.public_id}-brightness"[^>]*aria-invalid="false">', body)


def test_templates_page_strip_is_one_tab_stop_and_class_labels_mention_unclassed(
    alice_client, alice_dataset, alice_template
):
    body = alice_client.get(reverse("ui-templates", args=[alice_dataset.public_id])).content.decode()
    strip = body[body.index('id="ref-strip"') : body.index('<div class="card canvas-card">')]
    assert strip.count('tabindex="0"') == 1 and strip.count('tabindex="-1"') == 2
    assert "pass and unclassed images (not fail)" in body
    assert 'data-point-mode="negative"' in body  # the +/- toggle for touch
    assert 'style="' not in body


def test_job_zip_link_has_a_slug_file_name(
    alice_client, alice_dataset, alice_template, django_capture_on_commit_callbacks
):
    from datasets.jobs.services import job_create
    from datasets.services.datasets import dataset_rename

    dataset_rename(dataset=alice_dataset, name="Holiday Photos: Ümlaut & Co")
    with django_capture_on_commit_callbacks(execute=True):
        job = job_create(dataset=alice_dataset, owner=alice_dataset.owner)
    body = alice_client.get(reverse("ui-job", args=[job.public_id])).content.decode()
    assert f'download="holiday-photos-umlaut-co-{job.id.hex[:8]}.zip"' in body
    assert "<progress" in body and 'style="' not in body
