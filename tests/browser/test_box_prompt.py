"""Box prompts on the templates page, in headless Chromium: Box mode, drag a box, the live preview sends it
and the mask overlay appears, pick the candidate jobs use, save: the template holds the box and the choice."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import OVERLAY_FRACTION, SNAPSHOT, log_in, overlay_seq, wait_overlay

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_drag_a_box_see_the_mask_and_save_it(live_asgi, page, shoot, alice, photo_png):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets.services.datasets import dataset_create
    from datasets.services.uploads import images_upload
    from templates_app.models import Template

    dataset = dataset_create(owner=alice, name="Boxes")
    images_upload(dataset=dataset, files=[SimpleUploadedFile("coffee.png", photo_png["coffee"])])

    log_in(page, live_asgi, "alice")
    page.goto(live_asgi(f"/datasets/{dataset.public_id}/templates/"))
    page.wait_for_function("() => document.querySelector('#tpl-editor').dataset.ready === 'true'")
    base = page.evaluate(SNAPSHOT, "#tpl-canvas")
    page.get_by_role("button", name="Box: drag to draw a box").click()
    expect(page.get_by_role("button", name="Box: drag to draw a box")).to_have_attribute(
        "aria-pressed", "true"
    )

    canvas = page.locator("#tpl-canvas")
    rect = canvas.bounding_box()
    seq = overlay_seq(page)
    with page.expect_request(lambda r: r.url.endswith("/segment/") and r.method == "POST") as request_info:
        page.mouse.move(rect["x"] + rect["width"] * 0.3, rect["y"] + rect["height"] * 0.25)
        page.mouse.down()
        page.mouse.move(rect["x"] + rect["width"] * 0.5, rect["y"] + rect["height"] * 0.5, steps=5)
        page.mouse.move(rect["x"] + rect["width"] * 0.7, rect["y"] + rect["height"] * 0.75, steps=5)
        page.mouse.up()
    payload = json.loads(request_info.value.post_data)
    assert payload["points"] == []
    assert payload["box"] == pytest.approx([0.3, 0.25, 0.7, 0.75], abs=0.01)
    wait_overlay(page, seq)
    shot = page.evaluate(SNAPSHOT, "#tpl-canvas")
    assert page.evaluate(OVERLAY_FRACTION, [base, shot]) > 0.01, "the mask overlay did not appear"
    assert int(canvas.get_attribute("data-overlay-area")) > 0
    expect(page.locator("#point-count")).to_contain_text("a box")
    shoot(page, "templates-box")

    page.get_by_label("Jobs use").select_option("1")
    page.get_by_label("Name", exact=True).fill("cup box")
    page.get_by_role("button", name="Save template").click()
    expect(page.locator(".messages")).to_contain_text("Saved template “cup box”")

    template = Template.objects.get(dataset=dataset)
    assert template.box == pytest.approx(payload["box"]) and template.points == []
    assert template.mask_choice == "1"
