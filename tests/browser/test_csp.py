"""The pages under their Content-Security-Policy: no violation anywhere, and the scripts still work
(canvas overlay on the templates page, htmx preview swaps, the job page's live SSE updates, the admin)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import click_canvas, log_in, overlay_seq

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COLLECT_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


def _violations(page) -> list[str]:
    return page.evaluate("window.__csp || []")


def test_the_pages_work_under_the_csp_without_a_violation(live_asgi, page, alice, photo_png):
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets.services.datasets import dataset_create
    from datasets.services.uploads import images_upload

    dataset = dataset_create(owner=alice, name="Under CSP")
    images_upload(
        dataset=dataset,
        files=[SimpleUploadedFile(f"{name}.png", photo_png[name]) for name in ("coffee", "chelsea")],
    )
    get_user_model().objects.filter(pk=alice.pk).update(is_staff=True, is_superuser=True)
    page.add_init_script(COLLECT_VIOLATIONS)
    console = []
    page.on(
        "console",
        lambda msg: (
            console.append(msg.text) if "Content Security Policy" in msg.text or msg.type == "error" else None
        ),
    )
    page.on("dialog", lambda dialog: dialog.accept())
    seen = []

    login = page.goto(live_asgi("/accounts/login/"))
    assert "script-src 'self'" in login.headers["content-security-policy"]
    log_in(page, live_asgi, "alice")
    seen += _violations(page)

    # step 1: the upload page (drop zone script, htmx)
    page.goto(live_asgi(f"/datasets/{dataset.public_id}/upload/"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#image-grid img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    seen += _violations(page)

    # step 2: the canvas takes a point and draws the mask overlay; save the template
    page.goto(live_asgi(f"/datasets/{dataset.public_id}/templates/"))
    page.wait_for_function("() => document.querySelector('#tpl-editor').dataset.ready === 'true'")
    before = overlay_seq(page)
    click_canvas(page, 0.5, 0.5)
    assert overlay_seq(page) != before
    assert int(page.locator("#tpl-canvas").get_attribute("data-overlay-area")) > 0
    page.locator("#tpl-form").get_by_role("button", name=re.compile("Save")).first.click()
    expect(page.locator("#tpl-cards .tpl-card")).to_have_count(1, timeout=30_000)
    seen += _violations(page)

    # step 3: the htmx preview swaps in an edited image (a data: URL)
    page.goto(live_asgi(f"/datasets/{dataset.public_id}/generate/"))
    expect(page.locator("#preview-after")).to_have_attribute(
        "src", re.compile("^data:image/"), timeout=60_000
    )
    seen += _violations(page)

    # the job page fills in live over SSE
    page.locator("#generate-button").click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{32}/$"), timeout=30_000)
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    expect(page.locator("#item-0")).to_have_attribute("data-status", "succeeded")
    seen += _violations(page)

    # the admin, and the API docs (excluded from the pages' policy: Swagger UI bootstraps inline)
    page.goto(live_asgi("/admin/datasets/datasetimage/"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#result_list img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    seen += _violations(page)
    docs = page.goto(live_asgi("/api/docs/"))
    assert "content-security-policy" not in docs.headers

    assert seen == []
    assert not [text for text in console if "Content Security Policy" in text], console

    # and the policy is live: an injected inline script is blocked and reported
    page.goto(live_asgi("/"))
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
        " document.body.appendChild(s); }"
    )
    page.wait_for_function("() => window.__csp.length > 0")
    assert page.evaluate("window.__ran === undefined")
    assert _violations(page)[0].startswith("script-src")
