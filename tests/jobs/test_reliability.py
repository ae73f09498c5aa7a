"""Reliability edges of job output: a retry never rewrites a file a committed variant points to (a ZIP download
streaming meanwhile stays whole), and job events are never trimmed inside the item transaction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from django_eventstream.models import Event

from datasets.jobs.events import job_channel
from datasets.jobs.services import job_delete, job_retry_failed
from datasets.models import ItemStatus
from imaging.codecs import sha256_hex
from tests.fixtures.factories import add_templates

pytestmark = pytest.mark.django_db


def _run(run_jobs, **kwargs):
    from datasets.jobs.services import job_create

    with run_jobs():
        job = job_create(**kwargs)
    job.refresh_from_db()
    return job


def test_a_retried_item_writes_new_files_and_the_old_ones_stay_whole_until_the_swap(
    alice, photo_dataset, run_jobs, monkeypatch
):
    add_templates(photo_dataset, 1)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice)
    variant = job.variants.order_by("image__position").first()
    old_name = variant.file.name
    with variant.file.open("rb") as handle:
        old_bytes = handle.read()
    # Pretend the item failed so it is retried; watch what the retry writes while it runs.
    job.items.filter(image=variant.image).update(status=ItemStatus.FAILED)
    type(job).objects.filter(pk=job.pk).update(failed_items=1, succeeded_items=job.succeeded_items - 1)
    seen_during_retry = []
    from datasets.jobs import processing

    real_save = processing._save_exact

    def save(name, data):
        # A download reading the committed variant at this moment gets its complete, unchanged file.
        with default_storage.open(old_name, "rb") as handle:
            seen_during_retry.append(sha256_hex(handle.read()) == sha256_hex(old_bytes))
        assert name != old_name
        return real_save(name, data)

    monkeypatch.setattr(processing, "_save_exact", save)
    with run_jobs():
        job_retry_failed(job=job)
    assert seen_during_retry and all(seen_during_retry)
    job.refresh_from_db()
    fresh = job.variants.get(image=variant.image)
    assert fresh.file.name != old_name and fresh.file.name.endswith("-a2.png")
    assert not default_storage.exists(old_name)  # swapped, then the old file went after commit
    assert job.variant_count == job.variants.count()


def test_appending_an_event_never_trims_old_events_and_deleting_a_job_removes_its_events(
    alice, photo_dataset, run_jobs
):
    add_templates(photo_dataset, 1)
    old_job = _run(run_jobs, dataset=photo_dataset, owner=alice)
    old_channel = job_channel(old_job.id)
    kept = Event.objects.filter(channel=old_channel).count()
    assert kept > 0
    Event.objects.filter(channel=old_channel).update(created=timezone.now() - timedelta(days=30))
    _run(run_jobs, dataset=photo_dataset, owner=alice)  # appends many events
    assert Event.objects.filter(channel=old_channel).count() == kept  # a month-old history still replays
    with run_jobs():
        job_delete(job=old_job)
    assert not Event.objects.filter(channel=old_channel).exists()
