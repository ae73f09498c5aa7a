"""The job services' contracts: job_create, job_cancel, job_retry_failed (state transitions and refusals)."""

from __future__ import annotations

import pytest

from datasets.jobs.services import (
    items_claim,
    items_release,
    job_cancel,
    job_create,
    job_delete,
    job_retry_failed,
)
from datasets.models import GenerationJob, ItemStatus, JobStatus
from samsite.common.errors import ServiceError
from tests.fixtures.factories import DatasetFactory, TemplateFactory, add_templates

pytestmark = pytest.mark.django_db


def test_job_create_snapshots_templates_in_save_order_and_makes_one_item_per_image(
    alice, photo_dataset, held_jobs, run_jobs, event_log
):
    first, second = add_templates(photo_dataset, 2)
    with run_jobs():
        job = job_create(
            dataset=photo_dataset,
            owner=alice,
            templates=[(second, {"opacity": 0.5}), (first, None)],
            source="ui",
        )
    assert held_jobs == [job.id]
    assert job.status == JobStatus.QUEUED and job.source == "ui" and job.total_items == 4
    assert [s["template_id"] for s in job.templates_snapshot] == [first.id.hex, second.id.hex]
    assert job.templates_snapshot[0]["edits"]["brightness"] == 0.25
    assert job.templates_snapshot[1]["edits"]["opacity"] == 0.5
    assert job.templates_snapshot[1]["points"] == [{"x_norm": 0.3, "y_norm": 0.7, "positive": True}]
    items = list(job.items.order_by("index").values_list("index", "image__filename", "status"))
    assert items == [
        (0, "astronaut.png", "pending"),
        (1, "coffee.png", "pending"),
        (2, "camera.png", "pending"),
        (3, "chelsea.png", "pending"),
    ]
    assert event_log.types(job) == ["status:queued"]


def test_nothing_is_enqueued_when_the_transaction_rolls_back(alice, photo_dataset, held_jobs, run_jobs):
    from django.db import transaction

    add_templates(photo_dataset, 1)
    with run_jobs(), pytest.raises(RuntimeError), transaction.atomic():
        job_create(dataset=photo_dataset, owner=alice)
        raise RuntimeError
    assert held_jobs == [] and not GenerationJob.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"compose": "collage"}, "invalid_compose"),
        ({"output_format": "gif"}, "invalid_format"),
        ({"source": "fax"}, "invalid_source"),
        ({"templates": []}, "no_templates"),
    ],
)
def test_job_create_refuses_bad_parameters(alice, photo_dataset, held_jobs, kwargs, code):
    add_templates(photo_dataset, 1)
    with pytest.raises(ServiceError) as raised:
        job_create(dataset=photo_dataset, owner=alice, **kwargs)
    assert raised.value.code == code
    assert not GenerationJob.objects.exists()


def test_job_create_names_the_bad_edit_field_and_template(alice, photo_dataset, held_jobs):
    template = add_templates(photo_dataset, 1)[0]
    with pytest.raises(ServiceError) as raised:
        job_create(dataset=photo_dataset, owner=alice, templates=[(template, {"gamma": "lots"})])
    assert raised.value.code == "invalid_edits"
    assert raised.value.extra == {"field": "gamma", "template_id": template.id.hex}


def test_lenient_edits_ignore_unknown_keys_for_the_seed_api(alice, photo_dataset, held_jobs):
    template = add_templates(photo_dataset, 1)[0]
    job = job_create(
        dataset=photo_dataset, owner=alice, templates=[(template, {"hue": 10, "glow": 3})], strict_edits=False
    )
    assert (
        job.templates_snapshot[0]["edits"]["hue"] == 10 and "glow" not in job.templates_snapshot[0]["edits"]
    )


def test_job_create_refuses_foreign_and_duplicate_templates(alice, bob, photo_dataset, held_jobs):
    mine = add_templates(photo_dataset, 1)[0]
    foreign = TemplateFactory(dataset=DatasetFactory(owner=alice))
    with pytest.raises(ServiceError) as raised:
        job_create(dataset=photo_dataset, owner=alice, templates=[(mine, None), (foreign, None)])
    assert (raised.value.code, raised.value.extra) == ("invalid_template", {"index": 1})
    with pytest.raises(ServiceError) as raised:
        job_create(dataset=photo_dataset, owner=alice, templates=[(mine, None), (mine, {})])
    assert (raised.value.code, raised.value.extra) == ("duplicate_template", {"index": 1})
    with pytest.raises(ServiceError) as raised:
        job_create(dataset=photo_dataset, owner=bob)
    assert raised.value.code == "dataset_not_found" and raised.value.status == 404


def test_a_template_with_corrupt_points_is_refused(alice, photo_dataset, held_jobs):
    template = add_templates(photo_dataset, 1)[0]
    type(template).objects.filter(pk=template.pk).update(points=[{"x_norm": 5, "y_norm": 0}])
    template.refresh_from_db()
    with pytest.raises(ServiceError) as raised:
        job_create(dataset=photo_dataset, owner=alice)
    assert raised.value.code == "invalid_points"


def test_cancel_ends_a_queued_or_idle_job_at_once_and_flags_one_with_items_in_flight(
    alice, photo_dataset, held_jobs, run_jobs, event_log
):
    add_templates(photo_dataset, 1)
    queued = job_create(dataset=photo_dataset, owner=alice)
    with run_jobs():
        canceled = job_cancel(job=queued)
    assert canceled.status == JobStatus.CANCELED and canceled.finished_at
    assert event_log.types(queued) == ["status:canceled", "done"]

    running = job_create(dataset=photo_dataset, owner=alice)
    with run_jobs():
        claim = items_claim(worker="w:1:abcd:T", job_id=running.id, size=1)
    assert claim.job.status == JobStatus.RUNNING
    flagged = job_cancel(job=running)
    assert flagged.status == JobStatus.RUNNING and flagged.cancel_requested  # an image is in flight
    with run_jobs():
        items_release(worker="w:1:abcd:T", job=running, item_ids=claim.item_ids)
    running.refresh_from_db()
    assert running.status == JobStatus.CANCELED  # the last worker out ends it
    assert event_log.types(running)[-2:] == ["status:canceled", "done"]

    idle = job_create(dataset=photo_dataset, owner=alice)
    GenerationJob.objects.filter(pk=idle.pk).update(status=JobStatus.RUNNING)
    with run_jobs():
        assert job_cancel(job=idle).status == JobStatus.CANCELED  # nothing in flight: ends at once

    with pytest.raises(ServiceError) as raised:
        job_cancel(job=canceled)
    assert (raised.value.code, raised.value.status) == ("job_not_cancelable", 409)


def test_retry_puts_failed_items_back_and_fixes_the_counters(alice, photo_dataset, held_jobs, run_jobs):
    add_templates(photo_dataset, 1)
    job = job_create(dataset=photo_dataset, owner=alice)
    job.items.filter(index__in=[0, 1]).update(status=ItemStatus.SUCCEEDED)
    job.items.filter(index__in=[2, 3]).update(status=ItemStatus.FAILED, error="bad")
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED, succeeded_items=2, failed_items=2, error="x"
    )
    with pytest.raises(ServiceError):
        job_retry_failed(job=GenerationJob.objects.create(dataset=photo_dataset, owner=alice))  # still queued
    with run_jobs():
        retried = job_retry_failed(job=job)
    assert (retried.status, retried.failed_items, retried.succeeded_items, retried.error) == (
        "queued",
        0,
        2,
        "",
    )
    assert list(job.items.order_by("index").values_list("status", "error")) == [
        ("succeeded", ""),
        ("succeeded", ""),
        ("pending", ""),
        ("pending", ""),
    ]
    assert held_jobs[-1] == job.id


def test_job_delete_removes_rows_and_files_and_refuses_live_jobs(alice, photo_dataset, run_jobs):
    from django.core.files.storage import default_storage

    add_templates(photo_dataset, 1)
    with run_jobs():
        job = job_create(dataset=photo_dataset, owner=alice)
    names = [v.file.name for v in job.variants.all()] + [v.mask_file.name for v in job.variants.all()]
    assert len(names) == 8 and all(default_storage.exists(n) for n in names)
    with run_jobs():
        job_delete(job=job)
    assert not GenerationJob.objects.filter(pk=job.pk).exists()
    assert not any(default_storage.exists(n) for n in names)
    assert photo_dataset.images.count() == 4  # the dataset keeps its images

    queued = job_create(dataset=photo_dataset, owner=alice)
    with pytest.raises(ServiceError) as raised:
        job_delete(job=queued)
    assert raised.value.code == "job_not_finished"


def test_prune_deletes_only_old_ended_jobs(alice, photo_dataset, run_jobs, held_jobs):
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    add_templates(photo_dataset, 1)
    old = job_create(dataset=photo_dataset, owner=alice)
    recent = job_create(dataset=photo_dataset, owner=alice)
    running = job_create(dataset=photo_dataset, owner=alice)
    GenerationJob.objects.filter(pk__in=[old.pk, recent.pk]).update(status=JobStatus.SUCCEEDED)
    GenerationJob.objects.filter(pk=running.pk).update(status=JobStatus.RUNNING)
    GenerationJob.objects.filter(pk__in=[old.pk, running.pk]).update(
        created=timezone.now() - timedelta(days=40)
    )
    with run_jobs():
        call_command("prune", "--days", "30")
    assert set(GenerationJob.objects.values_list("pk", flat=True)) == {recent.pk, running.pk}


ELSEWHERE = (
    "another-host:4242:beef:MainThread"  # a worker on another machine: only its lease says it is alive
)


def _expire_leases(job) -> None:
    from datetime import timedelta

    from django.utils import timezone

    job.items.filter(status=ItemStatus.RUNNING).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_cancelling_a_job_whose_worker_died_ends_it_and_frees_the_owners_slot(
    alice, photo_dataset, held_jobs, run_jobs, event_log, settings
):
    settings.JOB_CHUNK_SIZE = 2
    settings.MAX_ACTIVE_JOBS_PER_USER = 1
    add_templates(photo_dataset, 1)
    with run_jobs():
        job = job_create(dataset=photo_dataset, owner=alice)
        claim = items_claim(worker=ELSEWHERE, job_id=job.id)  # ... and that worker dies
    assert len(claim.items) == 2
    _expire_leases(job)
    with run_jobs():
        job = job_cancel(job=job)
    assert job.status == JobStatus.CANCELED
    assert set(job.items.values_list("status", flat=True)) == {ItemStatus.PENDING}
    assert event_log.types(job).count("done") == 1
    with pytest.raises(ServiceError) as refused:
        job_cancel(job=job)
    assert refused.value.code == "job_not_cancelable"
    # The owner's slot is free again, and retry resumes every item.
    with run_jobs():
        job = job_retry_failed(job=job)
    assert job.status == JobStatus.QUEUED
    with run_jobs():
        job_cancel(job=job)
        job_delete(job=job)
    assert not GenerationJob.objects.filter(pk=job.pk).exists()


def test_a_canceled_job_ends_once_the_lease_of_its_dead_worker_expires(
    alice, photo_dataset, held_jobs, run_jobs, event_log
):
    from datasets.jobs.services import leases_release_orphaned

    add_templates(photo_dataset, 1)
    with run_jobs():
        job = job_create(dataset=photo_dataset, owner=alice)
        items_claim(worker=ELSEWHERE, job_id=job.id)
        job = job_cancel(job=job)  # the worker is alive (its lease holds): the job waits for its image
    assert job.status == JobStatus.RUNNING and job.cancel_requested
    with run_jobs():
        assert leases_release_orphaned() == []  # nothing expired yet
    _expire_leases(job)  # ... then it dies
    with run_jobs():
        assert leases_release_orphaned() == [job.pk]  # every worker loop runs this
        assert leases_release_orphaned() == []
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED
    assert not job.items.filter(status=ItemStatus.RUNNING).exists()
    assert event_log.types(job).count("done") == 1
    # A second job may be created: the canceled one no longer counts against the limit.
    assert job_create(dataset=photo_dataset, owner=alice).status == JobStatus.QUEUED
