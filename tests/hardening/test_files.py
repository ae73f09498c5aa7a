"""Stored XSS and file serving: stored names and Content-Types follow the decoded format, never the
client's filename; every file view sends nosniff; admin file views check the object's view permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image, PngImagePlugin

from datasets.models import DatasetImage
from legacy.models import LegacySession
from tests.fixtures.factories import DatasetFactory, DatasetImageFactory, UserFactory
from tests.fixtures.images import image_bytes

pytestmark = pytest.mark.django_db

SCRIPT = "<html><script>alert(document.cookie)</script></html>"


def _png_with_script() -> bytes:
    """A valid PNG whose text chunk is an HTML page: harmless as an image, an XSS if served as text/html."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", SCRIPT)
    return image_bytes(Image.new("RGB", (32, 24), (200, 30, 30)), pnginfo=info)


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def staff(db):
    user = UserFactory(username="staffer", is_staff=True)
    return user


def _staff_client(client, user, *perms: str):
    user.user_permissions.add(*Permission.objects.filter(codename__in=perms))
    client.force_login(user)
    return client


def test_a_legacy_upload_named_html_is_stored_and_served_as_png(alice_api, client, staff):
    response = alice_api.post(
        "/sam/init",
        {"image": SimpleUploadedFile("x.html", _png_with_script(), "text/html")},
        format="multipart",
    )
    assert response.status_code == 200
    session = LegacySession.objects.get(pk=response.json()["image_id"])

    served = _staff_client(client, staff, "view_legacysession").get(
        reverse("admin:legacy_legacysession_file", args=[session.pk, "image"])
    )

    assert session.image.name.endswith(".png") and ".html" not in session.image.name
    assert session.filename == "x.html"  # the display name is kept, as text
    assert served.status_code == 200
    assert served["Content-Type"] == "image/png"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert _body(served).startswith(b"\x89PNG")


def test_the_batch_endpoint_stores_by_decoded_format(alice_api):
    response = alice_api.post(
        "/sam/batch_process",
        {"images": [SimpleUploadedFile("evil.svg", _png_with_script())]},
        format="multipart",
    )

    session = LegacySession.objects.get(pk=response.json()["results"][0]["image_id"])
    assert session.image.name.endswith(".png")


def test_a_stored_name_without_an_image_suffix_is_served_as_an_attachment(alice, alice_api):
    image = DatasetImageFactory(dataset=DatasetFactory(owner=alice))
    # A row written before the rule (or by hand): its stored name ends in .html.
    image.file.save("old.html", ContentFile(_png_with_script()), save=True)
    DatasetImage.objects.filter(pk=image.pk).update(file=f"datasets/{image.dataset_id.hex}/old.html")
    image.refresh_from_db()
    image.file.storage.save(image.file.name, ContentFile(_png_with_script()))

    served = alice_api.get(f"/api/images/{image.id.hex}/file/")

    assert served.status_code == 200
    assert served["Content-Type"] == "application/octet-stream"
    assert served["Content-Disposition"].startswith("attachment")
    assert served["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in served["Content-Security-Policy"]


def test_upload_paths_drop_unknown_suffixes():
    from datasets.models import image_upload_to
    from legacy.models import legacy_upload_to

    image = DatasetImage(dataset=DatasetFactory.build())
    assert image_upload_to(image, "image.png").endswith(".png")
    assert not image_upload_to(image, "page.html").endswith(".html")
    assert legacy_upload_to(None, "page.html").endswith(".bin")
    assert legacy_upload_to(None, "image.jpg").endswith(".jpg")


def test_admin_file_views_require_the_objects_view_permission(client, staff):
    image = DatasetImageFactory()
    url = reverse("admin:datasets_datasetimage_file", args=[image.pk, "thumbnail"])

    refused = _staff_client(client, staff).get(url)  # staff, but no permission on images
    staff.user_permissions.add(Permission.objects.get(codename="view_datasetimage"))
    allowed = client.get(url)

    assert refused.status_code == 403
    assert allowed.status_code == 200 and allowed["Content-Type"] == "image/png"
    assert allowed["X-Content-Type-Options"] == "nosniff"
