"""The pages' JavaScript is a set of ES modules (frontend/static/frontend/js/, no build step): the layout loads
the entry module as ``type="module"``, and every module it reaches is served as JavaScript (browsers refuse a
module script of any other MIME type) from this site (the CSP allows scripts from 'self' only)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.templatetags.static import static
from django.urls import reverse

pytestmark = pytest.mark.django_db

ENTRY = "frontend/js/main.js"
IMPORT = re.compile(r"""^import\s[^;]*?from\s+["'](\./[\w-]+\.js)["'];?""", re.MULTILINE)


def test_the_layout_loads_the_entry_module_and_no_classic_script(client, alice):
    client.force_login(alice)
    html = client.get(reverse("dataset-list")).content.decode()
    assert f'<script type="module" src="{static(ENTRY)}"></script>' in html
    assert "frontend/app.js" not in html


def test_every_module_is_served_as_javascript_from_this_site(client):
    pending, seen = [ENTRY], set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        response = client.get(static(path))
        assert response.status_code == 200, path
        assert response["Content-Type"].split(";")[0] == "text/javascript", path
        source = Path(finders.find(path)).read_text(encoding="utf-8")
        folder = path.rsplit("/", 1)[0]
        pending.extend(f"{folder}/{name[2:]}" for name in IMPORT.findall(source))
    names = {path.rsplit("/", 1)[1] for path in seen}
    assert {"main.js", "dom.js", "errors.js", "upload.js", "canvas.js", "edits.js", "lightbox.js"} <= names
