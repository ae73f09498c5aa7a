"""Fair scheduling between users, per-user limits on every interface, the queue position, and the migration
that introduced item leases (it keeps a filled database's jobs, items, variants and files)."""

from __future__ import annotations

import json
import threading
from unittest import mock

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from datasets.jobs import processing
from datasets.jobs.services import items_claim, job_create, job_queue_position, worker_identity
from datasets.models import GenerationJob, JobItem
from tests.fixtures.factories import DatasetFactory, add_templates, store_image
from tests.fixtures.images import png_bytes


def _dataset(owner, count: int, name: str):
    dataset = DatasetFactory(owner=owner, name=name)
    for index in range(count):
        store_image(dataset, f"{name}_{index}.png", png_bytes(48, 36, seed=hash((name, index)) % 10_000))
    add_templates(dataset, 1)
    return dataset


@pytest.mark.django_db
def test_round_robin_lets_a_small_job_through_after_at_most_one_chunk_of_a_big_one(
    alice, bob, held_jobs, run_jobs, settings
):
    """One worker; alice queues 40 images, then bob 3: bob's job finishes first, held back by one chunk."""
    settings.JOB_CHUNK_SIZE = 4
    big = job_create(dataset=_dataset(alice, 40, "big"), owner=alice)
    worker = worker_identity()
    with run_jobs():
        first = items_claim(worker=worker)  # the worker is busy with alice's first chunk ...
        small = job_create(dataset=_dataset(bob, 3, "small"), owner=bob)  # ... when bob queues his job
        assert job_queue_position(small) == 2  # alice's running chunk, then bob
        processing.process_claim(first)
        finished_order = []
        alice_done_when_bob_finished = None
        while processing.work_once(worker=worker):
            for job in (small, big):
                job.refresh_from_db()
                if job.is_terminal and job.pk not in finished_order:
                    finished_order.append(job.pk)
                    if job.pk == small.pk:
                        alice_done_when_bob_finished = GenerationJob.objects.get(pk=big.pk).succeeded_items
    assert finished_order == [small.pk, big.pk]
    assert alice_done_when_bob_finished <= 2 * settings.JOB_CHUNK_SIZE  # her chunk in flight + one more turn
    assert (big.succeeded_items, small.succeeded_items) == (40, 3)


@pytest.mark.django_db(transaction=True)
def test_two_workers_share_one_job_and_every_variant_exists_exactly_once(alice, settings, event_log):
    settings.JOB_CHUNK_SIZE = 2
    dataset = _dataset(alice, 12, "shared")
    with mock.patch("datasets.jobs.runners.enqueue", lambda job_id: None):  # the two threads below run it
        job = job_create(dataset=dataset, owner=alice, compose="each")
    seen_workers: dict[str, int] = {}
    gate = threading.Barrier(2)

    def work(name: str) -> None:
        try:
            gate.wait(timeout=30)
            while processing.work_once(worker=f"{name}:1:abcd:T"):
                seen_workers[name] = seen_workers.get(name, 0) + 1
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(name,)) for name in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert set(seen_workers) == {"w1", "w2"}  # both did work
    assert (job.succeeded_items, job.failed_items, job.variant_count) == (12, 0, 12)
    assert job.variants.count() == 12
    assert len(set(job.variants.values_list("image_id", "template_key"))) == 12
    assert event_log.types(job).count("done") == 1
    assert event_log.types(job).count("item") == 12


@pytest.mark.django_db
def test_the_per_user_job_limit_answers_429_on_the_rest_api(alice, alice_api, bob, held_jobs, settings):
    settings.MAX_ACTIVE_JOBS_PER_USER = 2
    dataset = _dataset(alice, 2, "limit")
    url = reverse("api-dataset-jobs", args=[dataset.public_id])
    assert [alice_api.post(url, {}, format="json").status_code for _ in range(2)] == [202, 202]
    refused = alice_api.post(url, {}, format="json")
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "too_many_jobs" and body["limit"] == 2
    assert GenerationJob.objects.filter(owner=alice).count() == 2  # nothing was created
    # Another user is not affected by alice's queue.
    assert job_create(dataset=_dataset(bob, 1, "bobs"), owner=bob).status == "queued"


@pytest.mark.django_db
def test_the_queued_items_limit_answers_429(alice, alice_api, held_jobs, settings):
    settings.MAX_QUEUED_ITEMS_PER_USER = 3
    dataset = _dataset(alice, 2, "items")
    url = reverse("api-dataset-jobs", args=[dataset.public_id])
    assert alice_api.post(url, {}, format="json").status_code == 202
    refused = alice_api.post(url, {}, format="json")
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_queued_items"


@pytest.mark.django_db
def test_the_per_user_job_limit_answers_429_on_the_seed_api(alice, alice_api, held_jobs, settings):
    settings.MAX_ACTIVE_JOBS_PER_USER = 1
    dataset = _dataset(alice, 1, "seed")
    job_create(dataset=dataset, owner=alice)
    response = alice_api.post(
        "/api/sam/dataset/apply_stream",
        json.dumps({"dataset_id": dataset.public_id}),
        content_type="application/json",
    )
    assert response.status_code == 429
    assert response.json()["error"] == "too_many_jobs"
    assert GenerationJob.objects.filter(owner=alice).count() == 1


@pytest.mark.django_db
def test_the_per_user_job_limit_is_a_clear_message_in_the_ui(alice, alice_client, held_jobs, settings):
    settings.MAX_ACTIVE_JOBS_PER_USER = 1
    dataset = _dataset(alice, 1, "ui")
    job_create(dataset=dataset, owner=alice)
    response = alice_client.post(
        reverse("ui-generate", args=[dataset.public_id]),
        {"compose": "stack", "output_format": "png"},
    )
    assert response.status_code == 429  # as on the REST and seed APIs: no redirect
    assert GenerationJob.objects.filter(owner=alice).count() == 1
    page = response.content.decode()
    # The generate page again, the reason next to its Generate button.
    assert 'id="generate-button"' in page
    error = page[page.index('id="generate-error"') :]
    assert "already have 1 jobs queued or running" in error[: error.index("</p>")]


@pytest.mark.django_db
def test_the_job_api_shows_the_queue_position_while_a_job_waits(alice, alice_api, bob, held_jobs):
    bobs = job_create(dataset=_dataset(bob, 1, "first"), owner=bob)
    mine = job_create(dataset=_dataset(alice, 1, "second"), owner=alice)
    detail = alice_api.get(reverse("api-job-detail", args=[mine.public_id])).json()
    assert detail["queue_position"] == 2  # bob's turn, then alice's
    items_claim(worker=worker_identity(), job_id=bobs.id)
    GenerationJob.objects.filter(pk=bobs.pk).update(status="succeeded")
    assert alice_api.get(reverse("api-job-detail", args=[mine.public_id])).json()["queue_position"] == 1


@pytest.mark.django_db(transaction=True)
def test_the_lease_migration_keeps_jobs_items_variants_and_files(settings, client):
    """Migrate back to before item leases, fill the old schema, migrate forward: nothing is lost, every
    variant gets its template ids (from its key, or from the job's snapshot for stacked variants), the stored
    files are still there and the history pages still show the job."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    stored = {name: default_storage.save(name, ContentFile(name.encode())) for name in _OLD_FILES}
    assert list(stored.values()) == list(_OLD_FILES)
    executor = MigrationExecutor(connection)
    old = [("datasets", "0002_initial"), ("templates_app", "0001_initial")]
    executor.migrate(old)
    apps = executor.loader.project_state(old).apps
    User = apps.get_model("auth", "User")
    Dataset = apps.get_model("datasets", "Dataset")
    Image = apps.get_model("datasets", "DatasetImage")
    Job = apps.get_model("datasets", "GenerationJob")
    Item = apps.get_model("datasets", "JobItem")
    Variant = apps.get_model("datasets", "Variant")
    owner = User.objects.create(username="carol")
    dataset = Dataset.objects.create(owner=owner, name="Old")
    image = Image.objects.create(
        dataset=dataset,
        file="datasets/x/a.png",
        original_filename="a.png",
        filename="a.png",
        width=4,
        height=3,
        sha256="0" * 64,
        position=0,
    )
    snapshot = [{"template_id": "a" * 32, "name": "Cap"}, {"template_id": "b" * 32, "name": "Body"}]
    job = Job.objects.create(
        dataset=dataset,
        owner=owner,
        status="succeeded",
        templates_snapshot=snapshot,
        total_items=1,
        succeeded_items=1,
        variant_count=2,
    )
    Item.objects.create(job=job, image=image, index=0, status="succeeded", attempts=1)
    Variant.objects.create(
        job=job, image=image, template_key="stack", template_names=["Cap", "Body"], file="variants/j/s.png"
    )
    Variant.objects.create(
        job=job, image=image, template_key="b" * 32, template_names=["Body"], file="variants/j/b.png"
    )
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    from datasets.models import Variant as NewVariant

    migrated = GenerationJob.objects.get(pk=job.pk)
    assert (migrated.status, migrated.succeeded_items, migrated.variant_count) == ("succeeded", 1, 2)
    assert JobItem.objects.get(job=migrated).status == "succeeded"
    variants = {v.template_key: v for v in NewVariant.objects.filter(job=migrated)}
    assert variants["stack"].template_ids == ["a" * 32, "b" * 32]
    assert variants["stack"].file.name == "variants/j/s.png"
    assert variants["b" * 32].template_ids == ["b" * 32]
    for variant in variants.values():
        assert default_storage.exists(variant.file.name)
        with default_storage.open(variant.file.name) as handle:
            assert handle.read() == variant.file.name.encode()
    assert default_storage.exists(migrated.dataset.images.get().file.name)

    # The history pages (the job list of the dataset, the job page) and the API still show the job.
    client.force_login(migrated.owner)
    listing = client.get(reverse("ui-jobs", args=[migrated.dataset.public_id]))
    assert listing.status_code == 200 and migrated.public_id in listing.content.decode()
    page = client.get(reverse("ui-job", args=[migrated.public_id]))
    assert page.status_code == 200 and "Cap" in page.content.decode()
    api = client.get(reverse("api-job-list")).json()
    assert [job["id"] for job in api["results"]] == [migrated.id.hex]
    assert api["results"][0]["counters"]["variants"] == 2


_OLD_FILES = ("datasets/x/a.png", "variants/j/s.png", "variants/j/b.png")


@pytest.mark.django_db
def test_the_job_page_shows_the_queue_position_while_a_job_waits(alice, alice_client, bob, held_jobs):
    job_create(dataset=_dataset(bob, 1, "ahead"), owner=bob)
    mine = job_create(dataset=_dataset(alice, 1, "page"), owner=alice)
    page = alice_client.get(reverse("ui-job", args=[mine.public_id])).content.decode()
    assert 'id="job-queue-position"' in page and "position 2 in the queue" in page
