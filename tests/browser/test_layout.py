"""What a first-time user meets (issue 16), in headless Chromium at 1280, 1440, 1920 and 390 px, with 14 images.

* Every page fits its viewport (no sideways scroll) and no element covers another's controls (the element at
  each control's centre is that control); on the templates page Save is clickable and saves.
* The edits page shows an out-of-range value's error inline, next to its box, with DEBUG on and off (django-htmx's
  DEBUG script used to swap a 400 in as the whole page).
* The job page transfers thumbnails only (bytes measured from Playwright's request sizes).
* The job page's figures follow the live events (segmenter name, encoder calls, progress).
* On a phone the canvas scales to the screen and clicks land on the right image pixels; a +/- toggle places
  negative points by touch; the reference strip is one tab stop with arrow keys.
Screenshots of every page at every width go to test-artifacts/screenshots/layout-<width>-<page>.png.
"""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from playwright.sync_api import expect

from tests.fixtures.browser import log_in
from tests.fixtures.images import image_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = [1280, 1440, 1920, 390]
HEIGHTS = {390: 844}
IMAGE_COUNT = 14

# For every visible control: scroll it to the middle of the viewport, then the element at its centre must be
# the control itself (or inside it, or its label). Anything else is drawn over it.
COVERED_CONTROLS = """() => {
  const bad = [];
  const controls = [...document.querySelectorAll(
    'button, a[href], input:not([type=hidden]), select, textarea, canvas#tpl-canvas, summary')];
  for (const el of controls) {
    if (el.closest('[hidden], dialog:not([open]), .sr-only, details:not([open]) > form')) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none') continue;
    let r = el.getBoundingClientRect();
    if (r.width < 4 || r.height < 4) continue;
    el.scrollIntoView({block: 'center', inline: 'center'});
    r = el.getBoundingClientRect();
    const x = r.left + r.width / 2, y = r.top + r.height / 2;
    if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight) continue;
    const hit = document.elementFromPoint(x, y);
    const label = hit && hit.closest('label');
    const ok = hit && (hit === el || el.contains(hit) || (label && (label.control === el || label.contains(el))));
    if (!ok) {
      const name = (el.id ? '#' + el.id : el.tagName.toLowerCase() + '.' + el.className) +
        ' "' + (el.textContent || el.value || '').trim().slice(0, 30) + '"';
      bad.push(name + ' is covered by ' + (hit ? hit.tagName.toLowerCase() + '#' + hit.id + '.' + hit.className : 'nothing'));
    }
  }
  window.scrollTo(0, 0);
  return bad;
}"""
# WCAG 2 contrast of each matching element's text against the first opaque background behind it.
CONTRAST = """(selectors) => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const out = [];
  for (const sel of selectors) {
    for (const el of document.querySelectorAll(sel)) {
      if (!el.getClientRects().length) continue;
      const style = getComputedStyle(el);
      let node = el, bg = null;
      const layers = [];  // translucent backgrounds on the way, innermost first
      while (node && node.nodeType === 1) {
        const c = rgb(getComputedStyle(node).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] > 0.95)) { bg = c.slice(0, 3); break; }
        if (c.length === 4 && c[3] > 0) layers.push(c);
        node = node.parentElement;
      }
      // A translucent layer (an overlay note) may lie over anything, e.g. an image: the worst of white, black
      // and the opaque background beneath counts.
      const base = bg || [255, 255, 255];
      const bases = layers.length ? [base, [255, 255, 255], [0, 0, 0]] : [base];
      const fg = lum(rgb(style.color).slice(0, 3));
      let ratio = Infinity;
      for (const under of bases) {
        let c = under;
        for (const layer of layers.slice().reverse()) c = c.map((v, i) => layer[i] * layer[3] + v * (1 - layer[3]));
        const back = lum(c);
        ratio = Math.min(ratio, (Math.max(fg, back) + 0.05) / (Math.min(fg, back) + 0.05));
      }
      out.push({sel, text: el.textContent.trim().slice(0, 20), ratio, size: parseFloat(style.fontSize)});
    }
  }
  return out;
}"""
# The images a user can see: their box intersects the viewport and the box of each ancestor that clips
# (overflow other than visible), e.g. the reference strip that scrolls sideways.
VISIBLE_IMAGES = """() => [...document.images].filter((img) => {
  const r = img.getBoundingClientRect();
  if (!r.width || !r.height) return false;
  let left = Math.max(r.left, 0), top = Math.max(r.top, 0);
  let right = Math.min(r.right, innerWidth), bottom = Math.min(r.bottom, innerHeight);
  for (let node = img.parentElement; node && node !== document.body; node = node.parentElement) {
    const s = getComputedStyle(node);
    if (s.overflowX === 'visible' && s.overflowY === 'visible') continue;
    const b = node.getBoundingClientRect();
    left = Math.max(left, b.left); top = Math.max(top, b.top);
    right = Math.min(right, b.right); bottom = Math.min(bottom, b.bottom);
  }
  return right > left && bottom > top;
})"""
SAVE_AT_CENTRE = """() => {
  const b = document.querySelector('#save-template');
  b.scrollIntoView({block: 'center'});
  const r = b.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return hit === b || b.contains(hit);
}"""


def _variety(photos) -> list[tuple[str, bytes]]:
    """14 different 640x480 photos (crops of the samples), a third of them fail, one grayscale."""
    names = ["astronaut", "coffee", "chelsea", "camera"]
    files = []
    for i in range(IMAGE_COUNT):
        source = photos[names[i % 4]]
        h, w = source.shape[:2]
        dy, dx = (i * 7) % max(1, h // 5), (i * 11) % max(1, w // 5)
        crop = Image.fromarray(source[dy : dy + h * 4 // 5, dx : dx + w * 4 // 5]).resize((640, 480))
        tag = "fail" if i % 3 == 0 else "pass"
        files.append((f"part_{i:02d}_{tag}.png", image_bytes(crop)))
    return files


@pytest.fixture
def big_dataset(live_asgi, alice, photos, settings):
    """alice's dataset of 14 photos, two templates and one finished job (made inline, before the browser)."""
    from datasets.jobs.services import job_create
    from datasets.services.datasets import dataset_create
    from datasets.services.uploads import images_upload
    from templates_app.services import template_create

    dataset = dataset_create(owner=alice, name="Inspection photos")
    uploads = [SimpleUploadedFile(name, data, content_type="image/png") for name, data in _variety(photos)]
    images = images_upload(dataset=dataset, files=uploads).created
    assert len(images) == IMAGE_COUNT
    template_create(
        dataset=dataset,
        name="Centre",
        points=[{"x_norm": 0.5, "y_norm": 0.5, "positive": True}],
        reference_image=images[1],
        default_edits={"brightness": 0.25, "contrast": 0.2},
    )
    template_create(
        dataset=dataset,
        name="Corner",
        image_class="fail",
        points=[{"x_norm": 0.25, "y_norm": 0.3, "positive": True}],
        reference_image=images[0],
        default_edits={"gamma": 0.5},
    )
    runner = settings.JOB_RUNNER
    settings.JOB_RUNNER = "inline"
    job = job_create(dataset=dataset, owner=alice, compose="each")
    settings.JOB_RUNNER = runner
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return dataset, job


def _pages(server, dataset, job) -> list[tuple[str, str]]:
    base = f"/datasets/{dataset.public_id}"
    return [
        ("datasets", server("/")),
        ("upload", server(f"{base}/upload/")),
        ("templates", server(f"{base}/templates/")),
        ("generate", server(f"{base}/generate/")),
        ("job", server(f"/jobs/{job.public_id}/")),
        ("jobs", server(f"{base}/jobs/")),
        ("help", server("/help/segmenter/")),
    ]


def _settle(page, name: str) -> None:
    if name == "generate":
        expect(page.locator("#preview-after")).to_be_visible(timeout=60_000)
    if name == "templates":
        page.wait_for_function("() => document.querySelector('#tpl-editor').dataset.ready === 'true'")
    # images actually visible are loaded: ones that intersect the viewport AND every scrolling ancestor's box
    # (lazy ones further down, or scrolled out of sight sideways inside the reference strip, may stay unloaded:
    # Chromium never fetches those)
    try:
        page.wait_for_function(
            f"() => ({VISIBLE_IMAGES})().every(i => i.complete)",
            timeout=120_000,  # a gate, not a speed check: thumbnails are made on first request
        )
    except Exception:
        pending = page.evaluate(f"() => ({VISIBLE_IMAGES})().filter(i => !i.complete).map(i => i.src)")
        raise AssertionError(f"{name}: images never loaded: {pending}") from None


def _overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_every_page_fits_and_nothing_covers_a_control(live_asgi, page, shoot, alice, big_dataset):
    dataset, job = big_dataset
    log_in(page, live_asgi, "alice")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": HEIGHTS.get(width, 900)})
        for name, url in _pages(live_asgi, dataset, job):
            page.goto(url)
            _settle(page, name)
            assert _overflow(page) <= 0, f"{name} at {width}px scrolls sideways by {_overflow(page)}px"
            shoot(page, f"layout-{width}-{name}")
            covered = page.evaluate(COVERED_CONTROLS)
            assert not covered, f"{name} at {width}px: {covered[:5]}"
            # The header's dark bar spans the page (the user name is never white on the light background).
            bar = page.locator(".topbar").bounding_box()
            assert bar["x"] <= 0 and bar["width"] >= width - 1
            user = page.locator(".topbar .user").bounding_box()
            assert user["y"] + user["height"] <= bar["y"] + bar["height"]
        if width == 1440:
            _check_contrast(page, live_asgi, dataset, job)
        # Templates: the strip scrolls in its own box, the canvas sits in its column, Save is clickable.
        page.goto(_pages(live_asgi, dataset, job)[2][1])
        _settle(page, "templates")
        strip = page.locator("#ref-strip")
        assert strip.evaluate("s => s.scrollWidth > s.clientWidth") or width >= 1920
        canvas = page.locator("#tpl-canvas").bounding_box()
        column = page.locator(".canvas-card").bounding_box()
        assert (
            canvas["x"] >= column["x"] - 1
            and canvas["x"] + canvas["width"] <= column["x"] + column["width"] + 1
        )
        if width > 1000:
            panel = page.locator("#tpl-form").bounding_box()
            assert column["x"] + column["width"] <= panel["x"], "the canvas column runs into the side panel"
        box = page.locator("#tpl-canvas").bounding_box()
        seq = page.locator("#tpl-canvas").get_attribute("data-overlay-seq") or ""
        page.locator("#tpl-canvas").click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
        page.wait_for_function(
            "(s) => document.querySelector('#tpl-canvas').dataset.overlaySeq !== s", arg=seq, timeout=60_000
        )
        expect(page.locator("#save-template")).to_be_enabled()
        assert page.evaluate(SAVE_AT_CENTRE), f"Save is covered at {width}px"
        page.get_by_label("Name", exact=True).fill(f"At {width}")
        page.locator("#save-template").click()
        expect(page.locator(".messages")).to_contain_text(f"Saved template “At {width}”")


def _check_contrast(page, server, dataset, job) -> None:
    """Text meets WCAG AA (4.5:1) on the pressed filter, the active step tab, status chips and badges, and
    badges and chips are at least 12 px; the preview's overlay notes (grayscale, no template applies) are
    legible over any image."""
    from datasets.models import DatasetImage

    checked = []
    gray = DatasetImage.objects.filter(dataset=dataset, is_grayscale=True).first()
    page.goto(server(f"/datasets/{dataset.public_id}/generate/?image={gray.public_id}"))
    expect(page.locator("#preview .placeholder")).to_contain_text("Grayscale image", timeout=60_000)
    checked += page.evaluate(CONTRAST, ["#preview .placeholder"])
    for url in (server(f"/datasets/{dataset.public_id}/templates/"), server(f"/jobs/{job.public_id}/")):
        page.goto(url)
        checked += page.evaluate(
            CONTRAST,
            [
                ".filter [aria-pressed=true]",
                ".filter [aria-current=true]",
                ".steps a[aria-current=page]",
                ".status",
                ".badge",
                ".muted",
                "a.button.primary",
            ],
        )
    assert {c["sel"] for c in checked} >= {
        ".status",
        ".badge",
        ".steps a[aria-current=page]",
        "#preview .placeholder",
    }
    low = [c for c in checked if c["ratio"] < 4.5]
    assert not low, low[:5]
    small = [c for c in checked if c["sel"] in (".status", ".badge") and c["size"] < 12]
    assert not small, small[:5]


@pytest.mark.parametrize("debug", [True, False], ids=["debug-on", "debug-off"])
def test_out_of_range_value_shows_an_inline_error(
    live_asgi, page, shoot, alice, big_dataset, settings, debug
):
    dataset, _job = big_dataset
    settings.DEBUG = debug  # on: django-htmx's debug script is on the page
    log_in(page, live_asgi, "alice")
    page.goto(live_asgi(f"/datasets/{dataset.public_id}/generate/"))
    expect(page.locator("#preview-after")).to_be_visible(timeout=60_000)
    assert (page.locator("script[src*='django-htmx']").count() == 1) is debug
    card = page.locator(".edit-card", has_text="Centre")
    noise = card.locator("input[type=number][data-field=noise]")
    slider = card.get_by_label("Noise of Centre")
    slider_before = slider.input_value()
    noise.fill("15")
    noise.press("Tab")
    error = card.locator(f"#{noise.get_attribute('id')}-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("between 0 and 0.2")
    expect(noise).to_have_attribute("aria-invalid", "true")
    assert error.get_attribute("id") in noise.get_attribute("aria-describedby")
    assert noise.evaluate("n => getComputedStyle(n).borderColor") == "rgb(198, 40, 40)"  # red
    assert slider.input_value() == slider_before  # refused: the slider did not move
    # The server refuses it too, in place: the autosave says so, the preview shows it; the page is intact.
    expect(card.locator(".saved.error")).to_contain_text("noise", timeout=30_000)
    expect(page.locator("#preview .placeholder.error")).to_contain_text("noise", timeout=30_000)
    expect(page.locator("#generate-form")).to_be_visible()
    assert page.locator("link[rel=stylesheet]").count() == 1
    # the error sits next to its box
    nb, eb = noise.bounding_box(), error.bounding_box()
    assert abs(eb["y"] - (nb["y"] + nb["height"])) < 60
    shoot(page, f"edits-inline-error-{'debug' if debug else 'nodebug'}", full_page=False)
    brightness = card.locator("input[type=number][data-field=brightness]")
    brightness.fill("-60")
    brightness.press("Tab")
    expect(card.locator(f"#{brightness.get_attribute('id')}-error")).to_contain_text("between -1 and 1")
    # fixing both clears the errors and saves
    noise.fill("0.05")
    noise.press("Tab")
    brightness.fill("0.1")
    brightness.press("Tab")
    expect(card.locator(".saved")).to_have_text("Saved ✓", timeout=30_000)
    expect(error).to_be_hidden()
    expect(noise).to_have_attribute("aria-invalid", "false")
    expect(page.locator("#preview-after")).to_be_visible(timeout=30_000)


def test_a_value_off_the_slider_step_is_saved_and_generate_starts(live_asgi, page, alice, big_dataset):
    """0.255 lies between the slider's steps (0.25, 0.26): the server accepts and saves it, so Generate must
    start the job (no native "nearest valid values" bubble blocking the submit)."""
    dataset, _job = big_dataset
    log_in(page, live_asgi, "alice")
    page.goto(live_asgi(f"/datasets/{dataset.public_id}/generate/"))
    expect(page.locator("#preview-after")).to_be_visible(timeout=60_000)
    card = page.locator(".edit-card", has_text="Centre")
    brightness = card.locator("input[type=number][data-field=brightness]")
    brightness.fill("0.255")
    brightness.press("Tab")
    expect(card.locator(".saved")).to_have_text("Saved ✓", timeout=30_000)
    expect(card.locator(f"#{brightness.get_attribute('id')}-error")).to_be_hidden()
    hue = page.locator(".edit-card", has_text="Corner").locator("input[type=number][data-field=hue]")
    hue.fill("12.5")
    hue.press("Tab")
    expect(page.locator(".edit-card", has_text="Corner").locator(".saved")).to_have_text(
        "Saved ✓", timeout=30_000
    )
    with page.expect_navigation(url=lambda u: "/jobs/" in u and "/datasets/" not in u, timeout=60_000):
        page.locator("#generate-button").click()
    expect(page.locator("#job-status")).to_be_visible()


def test_the_generate_label_counts_masks_in_annotate_mode(live_asgi, page, alice, big_dataset):
    """Annotate makes one output per (image, applicable template): 14 images, and the 5 fail images' second
    template, are 19 masks; the label says so, live and after a reload."""
    dataset, _job = big_dataset
    log_in(page, live_asgi, "alice")
    page.goto(live_asgi(f"/datasets/{dataset.public_id}/generate/"))
    label = page.locator("#generate-button .label")
    with page.expect_response(lambda r: r.url.endswith("/generate/settings/")):
        page.locator("input[name=compose][value=annotate]").check()
    expect(label).to_have_text(f"Annotate {IMAGE_COUNT} images → 19 masks")
    page.reload()
    expect(page.locator("input[name=compose][value=annotate]")).to_be_checked()
    expect(label).to_have_text(f"Annotate {IMAGE_COUNT} images → 19 masks")
    page.locator("input[name=compose][value=each]").check()
    expect(label).to_have_text(f"Generate {IMAGE_COUNT} images → 19 variants")
    page.locator("input[name=compose][value=stack]").check()
    expect(label).to_have_text(f"Generate {IMAGE_COUNT} images → {IMAGE_COUNT} variants")


def test_hue_and_saturation_follow_the_previewed_image_in_a_mixed_dataset(
    live_asgi, page, alice, big_dataset
):
    from datasets.models import DatasetImage

    dataset, _job = big_dataset
    gray = DatasetImage.objects.filter(dataset=dataset, is_grayscale=True).first()
    colour = DatasetImage.objects.filter(dataset=dataset, is_grayscale=False).first()
    log_in(page, live_asgi, "alice")
    page.goto(live_asgi(f"/datasets/{dataset.public_id}/generate/"))
    expect(page.locator("#preview-after")).to_be_visible(timeout=60_000)
    card = page.locator(".edit-card", has_text="Corner")
    hue = card.locator("input[type=number][data-field=hue]")
    hue_slider = card.get_by_label("Hue of Corner")
    note = page.locator("#gray-current-note")
    hue.fill("30")
    hue.press("Tab")
    expect(card.locator(".saved")).to_have_text("Saved ✓", timeout=30_000)
    expect(hue).to_be_enabled()
    expect(note).to_be_hidden()
    page.locator("#preview-image").select_option(gray.public_id)
    expect(hue).to_be_disabled()
    expect(hue_slider).to_be_disabled()
    expect(card.locator("input[type=number][data-field=saturation]")).to_be_disabled()
    expect(card.locator("input[type=number][data-field=brightness]")).to_be_enabled()
    expect(note).to_be_visible()
    # the value still goes with the form (colour images get it)
    mirror = card.locator(f"input[type=hidden][name='{hue.get_attribute('name')}']")
    expect(mirror).to_have_value("30")
    page.locator("#preview-image").select_option(colour.public_id)
    expect(hue).to_be_enabled()
    expect(note).to_be_hidden()
    expect(mirror).to_have_count(0)
    expect(hue).to_have_value("30")


def test_job_page_transfers_thumbnails_only(live_asgi, page, alice, big_dataset):
    from datasets.models import Variant

    _dataset, job = big_dataset
    variants = list(Variant.objects.filter(job=job))
    full_bytes = sum(v.file.size for v in variants)
    assert len(variants) >= 18  # "each" mode: 14 + the fail images' second template
    log_in(page, live_asgi, "alice")
    transferred: dict[str, int] = {}

    def on_finished(request):
        if request.resource_type == "image":
            transferred[request.url] = request.sizes()["responseBodySize"]

    page.on("requestfinished", on_finished)
    page.set_viewport_size({"width": 1920, "height": 3000})  # every tile in view: none left lazy
    page.goto(live_asgi(f"/jobs/{job.public_id}/"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#job-grid img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.wait_for_load_state("networkidle")  # every requestfinished event has been delivered
    thumbs = {u: n for u, n in transferred.items() if "/thumbnail/" in u and "/variants/" in u}
    assert len(thumbs) == len(variants)
    assert not [u for u in transferred if "/api/variants/" in u], "a tile loaded a full-size variant"
    total = sum(thumbs.values())
    assert max(thumbs.values()) < 40_000
    assert total * 5 < full_bytes, f"thumbnails {total} B vs full size {full_bytes} B"
    print(f"job page: {len(thumbs)} thumbnails, {total} B; the full-size variants are {full_bytes} B")
    # Full size only in the lightbox.
    page.locator("#item-0 [data-lightbox]").first.click()
    page.wait_for_function(
        "() => document.querySelector('#lightbox').dataset.ready === 'true'", timeout=30_000
    )
    assert [u for u in transferred if "/api/variants/" in u and u.endswith("/file/")]


def test_live_figures_follow_the_events(live_asgi, page, alice, big_dataset, monkeypatch):
    import datasets.jobs.processing as generation
    from datasets.jobs.services import job_create
    from datasets.models import GenerationJob

    dataset, _ = big_dataset
    gate = threading.Event()
    original = generation.decode_dataset_image

    def gated(image):
        assert gate.wait(60), "the page never opened"
        return original(image)

    monkeypatch.setattr(generation, "decode_dataset_image", gated)
    log_in(page, live_asgi, "alice")
    job = job_create(dataset=dataset, owner=alice, compose="stack")  # the embedded runner waits at the gate
    page.goto(live_asgi(f"/jobs/{job.public_id}/"))
    expect(page.locator("#job-live")).to_have_count(1)
    expect(page.locator("#job-done")).to_have_text(f"0 / {IMAGE_COUNT}")
    gate.set()
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    job = GenerationJob.objects.get(pk=job.pk)
    expect(page.locator("#job-done")).to_have_text(f"{IMAGE_COUNT} / {IMAGE_COUNT}")
    expect(page.locator("#job-segmenter")).to_have_text("classical")
    calls = f"{job.encoder_calls} call{'s' if job.encoder_calls != 1 else ''}"
    hits = f"{job.cache_hits} cached embedding{'s' if job.cache_hits != 1 else ''}"
    expect(page.locator("#job-encoder")).to_have_text(f"{calls} · {hits}")
    assert job.encoder_calls + job.cache_hits == IMAGE_COUNT
    expect(page.locator("#job-params")).to_contain_text("Timings")


def test_phone_canvas_scales_and_maps_taps_and_the_strip_is_one_tab_stop(
    live_asgi, page, shoot, alice, big_dataset
):
    dataset, _ = big_dataset
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, live_asgi, "alice")
    page.goto(live_asgi(f"/datasets/{dataset.public_id}/templates/"))
    page.wait_for_function("() => document.querySelector('#tpl-editor').dataset.ready === 'true'")
    canvas = page.locator("#tpl-canvas")
    box = canvas.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    seq = canvas.get_attribute("data-overlay-seq") or ""
    canvas.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.6})
    page.wait_for_function(
        "(s) => document.querySelector('#tpl-canvas').dataset.overlaySeq !== s", arg=seq, timeout=60_000
    )
    (point,) = json.loads(page.locator("#tpl-points").input_value())
    assert point["positive"] and abs(point["x_norm"] - 0.3) < 0.01 and abs(point["y_norm"] - 0.6) < 0.01
    # touch: the toggle makes the next tap a negative point
    page.get_by_role("button", name="Negative points").click()
    expect(page.locator("[data-point-mode=negative]")).to_have_attribute("aria-pressed", "true")
    seq = canvas.get_attribute("data-overlay-seq") or ""
    canvas.click(position={"x": box["width"] * 0.8, "y": box["height"] * 0.2})  # a plain click/tap
    page.wait_for_function(
        "(s) => document.querySelector('#tpl-canvas').dataset.overlaySeq !== s", arg=seq, timeout=60_000
    )
    expect(page.locator("#point-count")).to_contain_text("1 positive, 1 negative")
    shoot(page, "layout-390-templates-points", full_page=False)

    # the reference strip: one tab stop, arrows move within it, Tab leaves it
    links = page.locator("#ref-strip a")
    assert links.count() == IMAGE_COUNT
    assert page.locator("#ref-strip a[tabindex='0']").count() == 1
    current = page.locator("#ref-strip a[tabindex='0']")
    current.focus()
    start = current.get_attribute("title")
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("document.activeElement.getAttribute('title')")
    assert focused != start and page.evaluate("document.activeElement.closest('#ref-strip') !== null")
    page.keyboard.press("End")
    assert page.evaluate("document.activeElement.getAttribute('title')") == links.last.get_attribute("title")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('#ref-strip') === null")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # opens the focused image as the reference
    page.wait_for_url("**?image=*")


def test_gray_output_image_is_single_channel_on_the_job_page(live_asgi, page, alice, big_dataset):
    from datasets.models import Variant

    _, job = big_dataset
    variant = Variant.objects.filter(job=job, image__is_grayscale=True).first()
    assert variant is not None
    with variant.file.open("rb") as handle:
        assert Image.open(io.BytesIO(handle.read())).mode == "L"
    log_in(page, live_asgi, "alice")
    response = page.request.get(live_asgi(f"/variants/{variant.public_id}/thumbnail/"))
    assert response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.body()))
    assert thumb.mode == "L" and np.asarray(thumb).std() > 5
