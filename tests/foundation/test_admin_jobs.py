"""Admin: jobs are made by the app, so no "Add generation job"; a finished job is read-only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from datasets.models import GenerationJob, JobStatus
from tests.fixtures.factories import GenerationJobFactory

pytestmark = pytest.mark.django_db


def test_no_add_generation_job(admin_client):
    listing = admin_client.get(reverse("admin:datasets_generationjob_changelist")).content.decode()
    assert reverse("admin:datasets_generationjob_add") not in listing
    assert admin_client.get(reverse("admin:datasets_generationjob_add")).status_code == 403
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:datasets_generationjob_add") not in index
    for model in ("jobitem", "variant"):
        assert admin_client.get(reverse(f"admin:datasets_{model}_add")).status_code == 403


def test_finished_job_is_read_only_and_a_running_one_is_not(admin_client):
    done = GenerationJobFactory(status=JobStatus.SUCCEEDED)
    url = reverse("admin:datasets_generationjob_change", args=[done.pk])
    page = admin_client.get(url).content.decode()
    assert 'name="_save"' not in page and 'name="compose"' not in page  # a view page, no form fields
    response = admin_client.post(url, {"compose": "each", "status": "queued"})
    assert response.status_code == 403
    done.refresh_from_db()
    assert done.status == JobStatus.SUCCEEDED and done.compose == "stack"

    running = GenerationJobFactory(status=JobStatus.RUNNING)
    page = admin_client.get(
        reverse("admin:datasets_generationjob_change", args=[running.pk])
    ).content.decode()
    assert 'name="_save"' in page
    assert GenerationJob.objects.count() == 2


@pytest.mark.parametrize("model", ["jobitem", "variant"])
def test_a_finished_jobs_items_and_variants_are_read_only(admin_client, model):
    from tests.fixtures.factories import JobItemFactory, VariantFactory

    factory = JobItemFactory if model == "jobitem" else VariantFactory
    done = factory(job=GenerationJobFactory(status=JobStatus.SUCCEEDED))
    url = reverse(f"admin:datasets_{model}_change", args=[done.pk])
    response = admin_client.get(url)
    assert response.status_code == 200  # viewable
    page = response.content.decode()
    assert 'name="_save"' not in page and 'name="job"' not in page  # a view page, no form fields
    before = {f.attname: getattr(done, f.attname) for f in done._meta.concrete_fields}
    assert admin_client.post(url, {"job": done.job_id, "image": done.image_id}).status_code == 403
    done.refresh_from_db()
    assert {f.attname: getattr(done, f.attname) for f in done._meta.concrete_fields} == before

    running = factory(job=GenerationJobFactory(status=JobStatus.RUNNING))
    page = admin_client.get(reverse(f"admin:datasets_{model}_change", args=[running.pk])).content.decode()
    assert 'name="_save"' in page
