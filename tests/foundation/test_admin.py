"""Every admin changelist and change page renders with objects in it."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.fixtures.factories import ComponentFactory, JobItemFactory, TemplateFactory, VariantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def populated():
    variant = VariantFactory()
    JobItemFactory(job=variant.job, image=variant.image)
    TemplateFactory(dataset=variant.job.dataset, reference_image=variant.image)
    ComponentFactory()


def _project_models():
    return [m for m in admin.site._registry if m._meta.app_label in {"datasets", "templates_app", "legacy"}]


def test_every_project_model_is_registered():
    names = {m.__name__ for m in _project_models()}
    assert names == {
        "Dataset",
        "DatasetImage",
        "GenerationJob",
        "JobItem",
        "Variant",
        "Template",
        "LegacySession",
        "Component",
    }


def test_changelists_and_change_pages_render(admin_client, populated):
    for model in _project_models():
        opts = model._meta
        changelist = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert changelist.status_code == 200, opts.label
        obj = model.objects.first()
        assert obj is not None, opts.label
        change = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
        assert change.status_code == 200, opts.label
        assert str(obj.pk) in change.content.decode() or str(obj) in change.content.decode()


def test_image_thumbnails_are_served_to_staff_only(admin_client, client, populated):
    from datasets.models import DatasetImage

    image = DatasetImage.objects.first()
    url = reverse("admin:datasets_datasetimage_file", args=[image.pk, "thumbnail"])
    listing = admin_client.get(reverse("admin:datasets_datasetimage_changelist")).content.decode()
    assert url in listing
    response = admin_client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    assert client.get(url).status_code == 302  # anonymous: to the admin login
