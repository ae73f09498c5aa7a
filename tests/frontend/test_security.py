"""Ownership (another user's ids are 404 on every page), CSRF on every write, escaping of user strings."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from datasets.models import Dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_objects(bob_dataset, django_capture_on_commit_callbacks):
    from datasets.jobs.services import job_create

    with django_capture_on_commit_callbacks(execute=True):
        job = job_create(dataset=bob_dataset, owner=bob_dataset.owner)
    return {
        "dataset": bob_dataset.public_id,
        "image": bob_dataset.images.first().public_id,
        "template": bob_dataset.templates.first().public_id,
        "job": job.public_id,
    }


def _urls(o):
    d, i, t, j = o["dataset"], o["image"], o["template"], o["job"]
    gets = [
        reverse("ui-dataset", args=[d]),
        reverse("ui-upload", args=[d]),
        reverse("ui-templates", args=[d]),
        reverse("ui-templates", args=[d]) + f"?image={i}",
        reverse("ui-template-mask", args=[d, t]),
        reverse("ui-image-display", args=[d, i]),
        reverse("ui-generate", args=[d]),
        reverse("ui-jobs", args=[d]),
        reverse("ui-job", args=[j]),
        reverse("ui-job-events", args=[j]),
    ]
    posts = [
        reverse("ui-dataset-rename", args=[d]),
        reverse("ui-dataset-delete", args=[d]),
        reverse("ui-upload", args=[d]),
        reverse("ui-image-class", args=[d, i]),
        reverse("ui-image-delete", args=[d, i]),
        reverse("ui-image-segment", args=[d, i]),
        reverse("ui-template-save", args=[d]),
        reverse("ui-template-delete", args=[d, t]),
        reverse("ui-template-edits", args=[d, t]),
        reverse("ui-generate", args=[d]),
        reverse("ui-preview", args=[d]),
        reverse("ui-job-cancel", args=[j]),
        reverse("ui-job-retry", args=[j]),
    ]
    return gets, posts


def test_alice_gets_404_on_every_page_of_bob(alice_client, bob_objects):
    gets, posts = _urls(bob_objects)
    for url in gets:
        assert alice_client.get(url).status_code == 404, url
    for url in posts:
        assert alice_client.post(url, {"name": "x", "points": "[]"}).status_code == 404, url
    assert Dataset.objects.filter(pk=bob_objects["dataset"]).exists()


def test_bob_sees_his_own_pages(bob_client, bob_objects):
    gets, _ = _urls(bob_objects)
    d, i = bob_objects["dataset"], bob_objects["image"]
    # Two addresses send their owner on (a dataset to its step 1, a PNG to its file); never to the login page.
    redirects = {
        reverse("ui-dataset", args=[d]): reverse("ui-upload", args=[d]),
        reverse("ui-image-display", args=[d, i]): reverse("image-file", kwargs={"image_id": i}),
    }
    for url in gets[:-1]:  # the SSE stream never ends; it is tested in test_live
        response = bob_client.get(url)
        if url in redirects:
            assert (response.status_code, response.url) == (302, redirects[url]), url
        else:
            assert response.status_code == 200, url


def test_alice_cannot_use_bobs_image_in_her_dataset(alice_client, alice_dataset, bob_objects):
    own = alice_dataset.public_id
    assert (
        alice_client.get(reverse("ui-templates", args=[own]) + f"?image={bob_objects['image']}").status_code
        == 404
    )
    response = alice_client.post(
        reverse("ui-template-save", args=[own]),
        {
            "points": '[{"x_norm": 0.5, "y_norm": 0.5, "positive": true}]',
            "reference_image": bob_objects["image"],
        },
    )
    assert response.status_code == 404
    response = alice_client.post(reverse("ui-preview", args=[own]), {"preview_image": bob_objects["image"]})
    assert response.status_code == 404
    assert alice_client.get(reverse("ui-templates", args=[own]) + "?template=not-an-id").status_code == 404


def test_malformed_ids_are_404(alice_client):
    assert alice_client.get(reverse("ui-upload", args=["nope"])).status_code == 404
    assert alice_client.get(reverse("ui-job", args=["1234"])).status_code == 404


def test_csrf_is_enforced_and_the_htmx_header_carries_the_token(alice, alice_dataset):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    url = reverse("ui-dataset-rename", args=[alice_dataset.public_id])
    assert client.post(url, {"name": "No token"}, HTTP_HX_REQUEST="true").status_code == 403
    page = client.get(reverse("ui-upload", args=[alice_dataset.public_id])).content.decode()
    token = page.split('hx-headers=\'{"X-CSRFToken": "')[1].split('"')[0]
    response = client.post(url, {"name": "With token"}, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    alice_dataset.refresh_from_db()
    assert alice_dataset.name == "With token"


def test_user_strings_are_escaped(
    alice_client, alice_dataset, alice_images, django_capture_on_commit_callbacks
):
    from datasets.jobs.services import job_create
    from datasets.services.datasets import dataset_rename
    from templates_app.services import template_create

    evil = '<script>alert("x")</script>'
    dataset_rename(dataset=alice_dataset, name=evil)
    image = alice_images[0]
    image.filename = "<img src=x onerror=alert(1)>.png"
    image.save()
    template_create(
        dataset=alice_dataset,
        points=[{"x_norm": 0.5, "y_norm": 0.4, "positive": True}],
        name=evil,
        reference_image=image,
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = job_create(dataset=alice_dataset, owner=alice_dataset.owner)
    d = alice_dataset.public_id
    pages = [
        reverse("dataset-list"),
        reverse("ui-upload", args=[d]),
        reverse("ui-templates", args=[d]),
        reverse("ui-generate", args=[d]),
        reverse("ui-jobs", args=[d]),
        reverse("ui-job", args=[job.public_id]),
    ]
    for url in pages:
        body = alice_client.get(url).content.decode()
        assert "<script>alert" not in body, url
        assert "<img src=x" not in body, url
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body, url
