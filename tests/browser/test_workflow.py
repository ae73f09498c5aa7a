"""The whole product in headless Chromium, on real photos, with the classical backend and the tiny SAM model.

Log in, create a dataset, upload (a bad file is rejected with its reason), capture two templates by clicking
points (the canvas pixels change as the mask overlay comes back), move sliders (the preview image data
changes), generate, watch thumbnails arrive, reload mid-job and see it continue live, open a variant with its
mask outlined, download the ZIP and open it. Screenshots of every page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import threading
import zipfile

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import OVERLAY_FRACTION, SNAPSHOT, click_canvas, log_in, overlay_seq, wait_overlay

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# wait_for_function predicates are functions, never expressions: Playwright polls an expression with eval(),
# which the pages' Content-Security-Policy forbids.
# More canvas helpers (run in the page, on the snapshots tests.fixtures.browser.SNAPSHOT keeps there).
CHANGED_FRACTION = """([a, b]) => {
  const x = window.__snaps[a], y = window.__snaps[b];
  if (x.length !== y.length) return 1;
  let n = 0;
  for (let i = 0; i < x.length; i += 4) {
    if (Math.abs(x[i] - y[i]) + Math.abs(x[i + 1] - y[i + 1]) + Math.abs(x[i + 2] - y[i + 2]) > 24) n++;
  }
  return n / (x.length / 4);
}"""
CHANGED_AWAY_FROM = """([a, b, u, v]) => {
  // changed pixels, not counting the new point's own dot (radius 12 px around it)
  const c = document.querySelector('#tpl-canvas');
  const x = window.__snaps[a], y = window.__snaps[b];
  const cx = u * c.width, cy = v * c.height;
  let n = 0;
  for (let i = 0; i < x.length; i += 4) {
    const p = i / 4, px = p % c.width, py = Math.floor(p / c.width);
    if ((px - cx) ** 2 + (py - cy) ** 2 < 144) continue;
    if (Math.abs(x[i] - y[i]) + Math.abs(x[i + 1] - y[i + 1]) + Math.abs(x[i + 2] - y[i + 2]) > 24) n++;
  }
  return n;
}"""
FAR_MASK_POINT = """([base, shot, px, py]) => {
  // a pixel under the overlay, far from (px, py): a negative point there must change the mask
  const c = document.querySelector('#tpl-canvas');
  const x = window.__snaps[base], y = window.__snaps[shot];
  let best = null, bestD = -1;
  for (let i = 0; i < x.length; i += 4 * 7) {
    if ((y[i + 2] - x[i + 2]) - (y[i] - x[i]) <= 20) continue;
    const p = i / 4, u = (p % c.width) / c.width, v = Math.floor(p / c.width) / c.height;
    const d = (u - px) ** 2 + (v - py) ** 2;
    if (d > bestD && u > 0.03 && u < 0.97 && v > 0.03 && v < 0.97) { bestD = d; best = [u, v]; }
  }
  return best;
}"""
YELLOW_PIXELS = """() => {
  const c = document.querySelector('#lightbox-canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] === 255 && d[i + 1] === 214 && d[i + 2] === 10) n++;
  return n;
}"""


def _files(photo_png):
    return [
        {"name": "astronaut_pass.png", "mimeType": "image/png", "buffer": photo_png["astronaut"]},
        {"name": "coffee_pass.png", "mimeType": "image/png", "buffer": photo_png["coffee"]},
        {"name": "chelsea_fail.png", "mimeType": "image/png", "buffer": photo_png["chelsea"]},
        {"name": "camera.png", "mimeType": "image/png", "buffer": photo_png["camera"]},
        {"name": "holiday.png", "mimeType": "image/png", "buffer": b"definitely not a PNG"},
    ]


def _capture_template(
    page, *, x: float, y: float, name: str, image_class: str = "", negative: bool = False
) -> None:
    page.wait_for_function("() => document.querySelector('#tpl-editor').dataset.ready === 'true'")
    base = page.evaluate(SNAPSHOT, "#tpl-canvas")
    click_canvas(page, x, y)
    first = page.evaluate(SNAPSHOT, "#tpl-canvas")
    assert page.evaluate(OVERLAY_FRACTION, [base, first]) > 0.01, "the mask overlay did not appear"
    assert int(page.locator("#tpl-canvas").get_attribute("data-overlay-area")) > 0
    expect(page.locator("#point-count")).to_contain_text("1 point")
    if negative:
        inside = page.evaluate(FAR_MASK_POINT, [base, first, x, y])
        assert inside is not None
        area_before = page.locator("#tpl-canvas").get_attribute("data-overlay-area")
        click_canvas(page, *inside, button="right")  # right click: negative point, no context menu
        second = page.evaluate(SNAPSHOT, "#tpl-canvas")
        assert page.locator("#tpl-canvas").get_attribute("data-overlay-area") != area_before
        changed = page.evaluate(CHANGED_AWAY_FROM, [first, second, *inside])
        assert changed > 50, f"the overlay did not change ({changed} pixels away from the new point)"
        expect(page.locator("#point-count")).to_contain_text("1 positive, 1 negative")
        # shift+click is negative too; undo takes it back
        click_canvas(page, 0.03, 0.97, modifiers=["Shift"])
        expect(page.locator("#point-count")).to_contain_text("1 positive, 2 negative")
        seq = overlay_seq(page)
        page.get_by_role("button", name="Undo").click()
        wait_overlay(page, seq)
        expect(page.locator("#point-count")).to_contain_text("1 positive, 1 negative")
    candidates = page.locator("#candidates .candidate:not([disabled])")
    assert candidates.count() >= 1
    expect(page.locator("#candidates .candidate").first).to_contain_text("★")
    if candidates.count() > 1:
        canvas = page.locator("#tpl-canvas")
        best_area = canvas.get_attribute("data-overlay-area")
        before = page.evaluate(SNAPSHOT, "#tpl-canvas")
        candidates.nth(1).click()
        after = page.evaluate(SNAPSHOT, "#tpl-canvas")
        expect(candidates.nth(1)).to_have_attribute("aria-pressed", "true")
        if canvas.get_attribute("data-overlay-area") != best_area:  # two candidates' masks may coincide
            assert page.evaluate(CHANGED_FRACTION, [before, after]) > 0, "the other candidate was not drawn"
        candidates.nth(0).click()
        expect(canvas).to_have_attribute("data-overlay-area", best_area)
    page.get_by_label("Name", exact=True).fill(name)
    if image_class:
        page.get_by_label("Applies to").select_option(image_class)
    page.get_by_role("button", name="Save template").click()
    expect(page.locator(".messages")).to_contain_text(f"Saved template “{name}”")


@pytest.fixture
def held_images(monkeypatch):
    """Holds a job after its first image: decoding any later one waits until the test sets the returned
    event, so the page is reloaded while the job is certainly running (and set again at teardown)."""
    import datasets.jobs.processing as generation

    original = generation.decode_dataset_image
    release = threading.Event()
    decoded = itertools.count()  # next() on it is atomic: the job's pool threads decode concurrently

    def held(image):
        if next(decoded) >= 1:
            assert release.wait(120), "the held images were never released"
        return original(image)

    monkeypatch.setattr(generation, "decode_dataset_image", held)
    yield release
    release.set()


@pytest.mark.parametrize("backend", ["classical", "sam"])
def test_the_whole_workflow(backend, request, live_asgi, page, shoot, alice, photo_png, held_images):
    if backend == "sam":
        request.getfixturevalue("use_tiny_sam")
    tag = backend
    page.on("dialog", lambda dialog: dialog.accept())
    console_errors = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)

    # --- log in, create a dataset ---
    page.goto(live_asgi("/"))
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    shoot(page, f"01-login-{tag}")
    log_in(page, live_asgi, "alice")
    expect(page.locator(".topbar .backend")).to_contain_text("SAM" if backend == "sam" else "classical")
    shoot(page, f"02-datasets-empty-{tag}")
    page.get_by_label("Name of the new dataset").fill("Holiday photos")
    page.get_by_role("button", name="Create dataset").click()
    expect(page).to_have_url(re.compile(r"/datasets/[0-9a-f]{32}/upload/$"))
    upload_url = page.url

    # --- step 1: upload, one bad file rejected with its reason ---
    page.set_input_files("#file-input", files=_files(photo_png))
    expect(page.locator("#upload-report")).to_contain_text("Added 4 images, rejected 1", timeout=60_000)
    rejected = page.locator(".rejected li")
    expect(rejected).to_have_count(1)
    expect(rejected).to_contain_text("holiday.png")
    expect(rejected).to_contain_text("image")  # the reason names what is wrong
    expect(page.locator("#image-grid .image-tile")).to_have_count(4)
    expect(page.locator("#upload-progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#step-image-count")).to_have_text("4 images")
    # thumbnails are real images served by the authenticated file view
    page.wait_for_function(
        "() => [...document.querySelectorAll('#image-grid img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    # the class badge: camera.png has none; make it a pass
    camera = page.locator(".image-tile", has_text="camera.png")
    camera.locator("select").select_option("pass")
    expect(page.locator(".image-tile", has_text="camera.png").locator("select")).to_have_class(
        re.compile("class-pass")
    )
    page.get_by_role("button", name="Fail", exact=True).click()
    expect(page.locator("#image-grid .image-tile:visible")).to_have_count(1)
    shoot(page, f"03-upload-filtered-{tag}")
    page.get_by_role("button", name="All", exact=True).click()
    shoot(page, f"03-upload-{tag}")

    # --- step 2: two templates ---
    page.get_by_role("link", name=re.compile("Next: capture templates")).click()
    expect(page).to_have_url(re.compile(r"/templates/$"))
    _capture_template(page, x=0.5, y=0.3, name="Face", negative=True)
    shoot(page, f"04-templates-one-{tag}")
    page.locator(".ref-strip a[title='coffee_pass.png']").click()
    expect(page).to_have_url(re.compile(r"\?image=[0-9a-f]{32}"))
    _capture_template(page, x=0.45, y=0.5, name="Cup", image_class="pass")
    expect(page.locator("#tpl-cards .tpl-card")).to_have_count(2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#tpl-cards img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=60_000,
    )
    # click the canvas again to show a live overlay in the screenshot; then a keyboard point
    click_canvas(page, 0.45, 0.5)
    seq = overlay_seq(page)
    page.locator("#tpl-canvas").focus()
    for _ in range(3):
        page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    wait_overlay(page, seq)
    expect(page.locator("#point-count")).to_contain_text("2 points (2 positive, 0 negative)")
    shoot(page, f"05-templates-two-{tag}")

    # --- step 3: sliders and live preview ---
    page.get_by_role("link", name=re.compile("Next: edits")).click()
    expect(page).to_have_url(re.compile(r"/generate/$"))
    after = page.locator("#preview-after")
    expect(after).to_be_visible(timeout=60_000)
    first_src = after.get_attribute("src")
    gamma = page.get_by_label("Gamma of Face")
    gamma.focus()
    page.keyboard.press("End")  # the slider's maximum, as a keyboard user would
    face_card = page.locator(".edit-card", has_text="Face")
    expect(face_card.locator("input[type=number][data-field=gamma]")).to_have_value("2")
    page.wait_for_function(
        "(src) => { const i = document.querySelector('#preview-after'); return i && i.getAttribute('src') !== src; }",
        arg=first_src,
        timeout=60_000,
    )
    second_src = page.locator("#preview-after").get_attribute("src")
    assert second_src != first_src and second_src.startswith("data:image/jpeg;base64,")
    expect(face_card.locator(".saved")).to_have_text("Saved ✓")
    # typing in the number input moves the slider too
    hue = face_card.locator("input[type=number][data-field=saturation]")
    hue.fill("1.5")
    hue.press("Tab")
    expect(page.get_by_label("Saturation of Face")).to_have_value("1.5")
    page.wait_for_function(
        "(src) => document.querySelector('#preview-after').getAttribute('src') !== src", arg=second_src
    )
    # a value out of range: the server's message is shown, in the preview and next to the template
    noise = face_card.locator("input[type=number][data-field=noise]")
    noise.fill("0.9")
    noise.press("Tab")
    expect(page.locator("#preview .placeholder.error")).to_contain_text("noise", timeout=30_000)
    expect(face_card.locator(".saved.error")).to_contain_text("noise")
    noise.fill("0")
    noise.press("Tab")
    expect(page.locator("#preview-after")).to_be_visible(timeout=30_000)
    expect(face_card.locator(".saved")).to_have_text("Saved ✓")
    console_errors.clear()  # the two 400s above were provoked
    # before/after toggle
    page.get_by_role("button", name="Before", exact=True).click()
    expect(page.locator("#preview-after")).to_be_hidden()
    expect(page.locator("#preview img.before")).to_be_visible()
    shoot(page, f"06-generate-before-{tag}")
    page.get_by_role("button", name="After", exact=True).click()
    expect(page.locator("#preview-after")).to_be_visible()
    shoot(page, f"06-generate-{tag}")
    # reload keeps the slider values (they were saved as the template's default edits)
    page.reload()
    expect(page.get_by_label("Gamma of Face")).to_have_value("2")

    # --- generate: live thumbnails, reload mid-job, continue ---
    page.get_by_label(re.compile("Export masks")).check()
    page.get_by_role("button", name=re.compile("Generate 4 images")).click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{32}/$"))
    job_url = page.url
    expect(page.locator("#item-0")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(page.locator("#item-0 img")).to_be_visible()
    expect(page.locator("#job-status")).to_have_text("running")
    shoot(page, f"07-job-running-{tag}")

    page.reload()
    statuses = page.eval_on_selector_all("#job-grid .item-tile", "els => els.map(e => e.dataset.status)")
    assert statuses[0] == "succeeded", statuses  # rendered by the server
    assert any(s in ("pending", "running") for s in statuses), f"the job ended before the reload: {statuses}"
    assert all(s in ("pending", "running") for s in statuses[1:]), f"images past the first ran: {statuses}"
    expect(page.locator("#job-live")).to_have_count(1)
    # ... and the rest arrives live on the reloaded page
    held_images.set()
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=90_000)
    for index in range(4):
        expect(page.locator(f"#item-{index}")).to_have_attribute("data-status", "succeeded")
        expect(page.locator(f"#item-{index} img").first).to_be_visible()
    expect(page.locator("#job-done")).to_have_text("4 / 4")
    expect(page.locator("#job-params")).to_contain_text("gamma 2")
    expect(page.locator("#job-params")).to_contain_text("Timings")
    expect(page.locator("#current-job-row .status")).to_have_text("succeeded")
    expect(page.locator("#current-job-row")).to_contain_text("4/4")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#job-grid img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    shoot(page, f"08-job-done-{tag}")

    # --- full size with the mask outlined ---
    page.locator("#item-0 [data-lightbox]").first.click()
    page.wait_for_function(
        "() => document.querySelector('#lightbox').dataset.ready === 'true'", timeout=30_000
    )
    assert page.evaluate(YELLOW_PIXELS) > 100
    shoot(page, f"09-lightbox-{tag}", full_page=False)
    page.get_by_role("button", name="Close").click()

    # --- the ZIP ---
    with page.expect_download() as download_info:
        page.locator("#download-zip").click()
    path = download_info.value.path()
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        images = [n for n in names if not n.startswith("masks/") and n != "manifest.json"]
        assert len(images) == 4, names
        assert len([n for n in names if n.startswith("masks/")]) == 4
        first = archive.read(images[0])
        assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert manifest  # the job's parameters ride along
    assert io.BytesIO(first).getbuffer().nbytes > 1000

    # --- history pages ---
    page.goto(upload_url.replace("/upload/", "/jobs/"))
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)
    shoot(page, f"10-jobs-{tag}")
    page.goto(live_asgi("/"))
    expect(page.locator(".dataset-card")).to_have_count(1)
    expect(page.locator(".dataset-card")).to_contain_text("succeeded")
    shoot(page, f"11-datasets-{tag}")

    if backend == "classical":
        for width in (1280, 1920):
            page.set_viewport_size({"width": width, "height": 1000})
            for name, url in (
                ("upload", upload_url),
                ("templates", upload_url.replace("/upload/", "/templates/")),
                ("generate", upload_url.replace("/upload/", "/generate/")),
                ("job", job_url),
                ("datasets", live_asgi("/")),
            ):
                page.goto(url)
                if name == "generate":
                    expect(page.locator("#preview-after")).to_be_visible(timeout=60_000)
                if name == "templates":
                    page.wait_for_function(
                        "() => document.querySelector('#tpl-editor').dataset.ready === 'true'"
                    )
                page.wait_for_function(
                    "() => [...document.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)"
                )
                _no_horizontal_scroll(page)
                shoot(page, f"w{width}-{name}")
    # htmx logs the requests that hx-sync="this:replace" aborts (stale previews dropped): expected
    unexpected = [e for e in console_errors if not e.startswith(("htmx:sendAbort", "htmx:afterRequest"))]
    assert not unexpected, console_errors


def _no_horizontal_scroll(page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at {page.viewport_size}"


def test_alice_gets_404_on_bobs_pages(live_asgi, page, shoot, alice, bob, photo_png):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets.jobs.services import job_create
    from datasets.services.datasets import dataset_create
    from datasets.services.uploads import images_upload
    from templates_app.services import template_create

    dataset = dataset_create(owner=bob, name="Bob's secret")
    image = images_upload(dataset=dataset, files=[SimpleUploadedFile("c.png", photo_png["coffee"])]).created[
        0
    ]
    template_create(
        dataset=dataset, points=[{"x_norm": 0.5, "y_norm": 0.5, "positive": True}], reference_image=image
    )
    from unittest import mock

    with mock.patch("datasets.jobs.runners.EmbeddedRunner.enqueue"):
        job = job_create(dataset=dataset, owner=bob)

    log_in(page, live_asgi, "alice")
    for path in (
        f"/datasets/{dataset.public_id}/upload/",
        f"/datasets/{dataset.public_id}/templates/",
        f"/datasets/{dataset.public_id}/generate/",
        f"/datasets/{dataset.public_id}/jobs/",
        f"/jobs/{job.public_id}/",
        f"/api/images/{image.public_id}/thumbnail/",
    ):
        response = page.goto(live_asgi(path))
        assert response.status == 404, path
    page.goto(live_asgi(f"/datasets/{dataset.public_id}/upload/"))
    shoot(page, "12-not-found")
    page.goto(live_asgi("/"))
    expect(page.locator(".dataset-card")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text("Bob's secret")
