"""Running jobs end to end (services + generation + inline runner) on real photos, classical and tiny SAM."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from datasets.image_io import decode_stored_image
from datasets.jobs.processing import STAGES, generate_job
from datasets.jobs.services import job_cancel, job_create, job_retry_failed
from datasets.models import STACK_TEMPLATE_KEY, GenerationJob, ItemStatus, JobStatus
from datasets.segmentation import app_segmenter
from imaging.codecs import decode_image, decode_mask_png, sha256_hex
from tests.fixtures.factories import add_templates, store_image

pytestmark = pytest.mark.django_db


def _run(run_jobs, **kwargs) -> GenerationJob:
    with run_jobs():
        job = job_create(**kwargs)
    job.refresh_from_db()
    return job


def test_a_stack_job_makes_one_edited_variant_per_photo(alice, photo_dataset, run_jobs, event_log):
    add_templates(photo_dataset, 2)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice)

    assert job.status == JobStatus.SUCCEEDED
    assert (job.total_items, job.succeeded_items, job.failed_items, job.skipped_items) == (4, 4, 0, 0)
    assert job.segmenter.startswith("classical:")
    assert set(STAGES) <= set(job.timings_ms) and job.timings_ms["wall"] > 0
    variants = list(job.variants.select_related("image").order_by("image__position"))
    assert job.variant_count == len(variants) == 4
    for variant in variants:
        assert variant.template_key == STACK_TEMPLATE_KEY
        assert variant.template_names == ["T1", "T2"]
        original = decode_stored_image(variant.image.file)
        with variant.file.open("rb") as handle:
            data = handle.read()
        assert sha256_hex(data) == variant.sha256
        output = decode_image(data)
        assert (output.width, output.height) == (variant.image.width, variant.image.height)
        with variant.mask_file.open("rb") as handle:
            mask = decode_mask_png(handle.read(), expected_size=(output.width, output.height))
        assert variant.area == int(mask.sum()) > 0
        # EDITS.md: outside the mask the output is the input, byte for byte; inside, the edits changed it.
        assert np.array_equal(output.rgb[~mask], original.rgb[~mask])
        assert not np.array_equal(output.rgb[mask], original.rgb[mask])
    # The camera photo is grayscale and stays grayscale.
    camera = next(v for v in variants if v.image.filename == "camera.png")
    with camera.file.open("rb") as handle:
        rgb = decode_image(handle.read()).rgb
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])

    assert event_log.types(job) == [
        "status:queued",
        "status:running",
        "item",
        "item",
        "item",
        "item",
        "status:succeeded",
        "done",
    ]
    items = [data for kind, data in event_log.of(job) if kind == "item"]
    assert [i["index"] for i in items] == [0, 1, 2, 3]
    assert [i["filename"] for i in items] == ["astronaut.png", "coffee.png", "camera.png", "chelsea.png"]
    first = items[0]
    assert first["status"] == "succeeded" and first["total"] == 4
    assert first["template_names"] == ["T1", "T2"] and len(first["template_ids"]) == 2
    assert first["variant_url"] == f"/api/variants/{first['variant_id']}/file/"
    assert first["mask_url"] == f"/api/variants/{first['variant_id']}/mask/"
    assert first["score"] is not None and first["area"] > 0 and first["ms"] >= 0
    assert items[-1]["counters"]["succeeded"] == 4
    done = event_log.of(job)[-1][1]
    assert done == {
        "job_id": job.id.hex,
        "status": "succeeded",
        "total": 4,
        "succeeded": 4,
        "failed": 0,
        "skipped": 0,
        "variant_count": 4,
        "download_url": f"/api/jobs/{job.id.hex}/download/",
        "error": "",
    }


def test_each_mode_makes_one_variant_per_image_and_template(alice, photo_dataset, run_jobs):
    templates = add_templates(photo_dataset, 3)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice, compose="each", output_format="jpeg")

    assert job.variant_count == 12
    keys = set(job.variants.values_list("image_id", "template_key"))
    assert len(keys) == 12
    assert {key for _, key in keys} == {t.id.hex for t in templates}
    for variant in job.variants.all():
        assert variant.template_id.hex == variant.template_key
        assert variant.template_names == [next(t.name for t in templates if t.id == variant.template_id)]
        assert variant.file.name.endswith(".jpg")
        with variant.file.open("rb") as handle:
            assert decode_image(handle.read()).format == "JPEG"


def test_the_class_filter_skips_templates_of_the_other_class(alice, make_photo_dataset, run_jobs, event_log):
    dataset = make_photo_dataset(
        alice, filenames=["astronaut_pass.png", "coffee_fail.png", "camera.png", "chelsea_fail.png"]
    )
    only_pass = add_templates(dataset, 1, image_class="pass", name="passing")[0]
    job = _run(run_jobs, dataset=dataset, owner=alice, templates=[(only_pass, None)])

    statuses = dict(job.items.values_list("image__filename", "status"))
    assert statuses == {
        "astronaut_pass.png": ItemStatus.SUCCEEDED,
        "coffee_fail.png": ItemStatus.SKIPPED,
        "camera.png": ItemStatus.SUCCEEDED,  # unclassed images take every template
        "chelsea_fail.png": ItemStatus.SKIPPED,
    }
    assert (job.succeeded_items, job.skipped_items, job.variant_count) == (2, 2, 2)
    # A skipped image is never encoded.
    assert job.encoder_calls + job.cache_hits == 2
    skipped = [d for kind, d in event_log.of(job) if kind == "item" and d["status"] == "skipped"]
    assert len(skipped) == 2 and skipped[0]["variant_url"] is None


@pytest.fixture
def sam_dataset(alice, make_photo_dataset):
    """Fewer photos for the SAM tests: the tiny encoder still takes about a second per image on a CPU."""
    return make_photo_dataset(alice, names=("astronaut", "camera", "chelsea"))


def test_each_image_is_encoded_once_for_all_templates(alice, sam_dataset, run_jobs, use_tiny_sam):
    add_templates(sam_dataset, 3)
    segmenter = app_segmenter()
    before = segmenter.encode_calls
    job = _run(run_jobs, dataset=sam_dataset, owner=alice, compose="each")

    assert job.status == JobStatus.SUCCEEDED and job.segmenter.startswith("sam:")
    assert job.variant_count == 9
    assert segmenter.encode_calls - before == 3 == job.encoder_calls
    assert job.cache_hits == 0
    assert not job.items.filter(cache_hit=True).exists()


def test_a_second_job_reuses_the_cached_embeddings(alice, sam_dataset, run_jobs, use_tiny_sam):
    """Changed edits, same images: no encoder call at all, the same masks, different pixels."""
    templates = add_templates(sam_dataset, 2)
    first = _run(run_jobs, dataset=sam_dataset, owner=alice)
    segmenter = app_segmenter()
    calls = segmenter.encode_calls
    changed = [(t, {"brightness": -0.3}) for t in templates]
    second = _run(run_jobs, dataset=sam_dataset, owner=alice, templates=changed)

    assert second.status == JobStatus.SUCCEEDED
    assert second.encoder_calls == 0 and second.cache_hits == 3
    assert segmenter.encode_calls == calls
    assert second.items.filter(cache_hit=True).count() == 3
    masks_first = {v.image_id: v.area for v in first.variants.all()}
    masks_second = {v.image_id: v.area for v in second.variants.all()}
    assert masks_first == masks_second
    assert {v.sha256 for v in first.variants.all()}.isdisjoint({v.sha256 for v in second.variants.all()})


def test_an_identical_rerun_is_byte_identical(alice, sam_dataset, run_jobs, use_tiny_sam):
    add_templates(sam_dataset, 2)
    first = _run(run_jobs, dataset=sam_dataset, owner=alice)
    second = _run(run_jobs, dataset=sam_dataset, owner=alice)
    assert sorted(first.variants.values_list("sha256", flat=True)) == sorted(
        second.variants.values_list("sha256", flat=True)
    )


def test_a_corrupt_image_fails_its_item_and_the_job_goes_on(alice, photo_dataset, run_jobs, event_log):
    add_templates(photo_dataset, 1)
    broken = photo_dataset.images.get(filename="coffee.png")
    name = broken.file.name
    default_storage.delete(name)
    default_storage.save(name, __import__("io").BytesIO(b"\x89PNG\r\n\x1a\nthis is not a png"))

    job = _run(run_jobs, dataset=photo_dataset, owner=alice)

    assert job.status == JobStatus.SUCCEEDED
    assert (job.succeeded_items, job.failed_items, job.variant_count) == (3, 1, 3)
    item = job.items.get(image=broken)
    assert item.status == ItemStatus.FAILED and item.error
    assert not job.variants.filter(image=broken).exists()
    failed = [d for kind, d in event_log.of(job) if kind == "item" and d["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["filename"] == "coffee.png" and failed[0]["error"] == item.error
    assert failed[0]["index"] == 1


def test_a_missing_file_fails_its_item_without_leaking_the_path(alice, photo_dataset, run_jobs):
    add_templates(photo_dataset, 1)
    gone = photo_dataset.images.get(filename="camera.png")
    default_storage.delete(gone.file.name)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice)
    error = job.items.get(image=gone).error
    assert error == "the stored file is missing"


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_between_images_and_retry_resumes(alice, photo_dataset, run_jobs, event_log):
    """Committed for real (transaction=True), so events go out while the job runs, as in production."""
    add_templates(photo_dataset, 1)

    def cancel_after_first_item(sender, job, event_type, payload, **kwargs):
        if event_type == "item" and payload["index"] == 0:
            job_cancel(job=job)

    from datasets.jobs.signals import job_event

    job_event.connect(cancel_after_first_item, dispatch_uid="cancel-after-first")
    try:
        job = _run(run_jobs, dataset=photo_dataset, owner=alice)
    finally:
        job_event.disconnect(dispatch_uid="cancel-after-first")

    assert job.status == JobStatus.CANCELED and job.finished_at
    # The image in flight when the cancel arrived is finished, nothing after it is started.
    assert 1 <= job.succeeded_items < 4
    assert job.items.filter(status=ItemStatus.PENDING).count() == 4 - job.succeeded_items
    assert event_log.types(job)[-2:] == ["status:canceled", "done"]

    with run_jobs():
        job_retry_failed(job=job)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.succeeded_items == 4 and job.variant_count == 4 == job.variants.count()


def test_retry_redoes_only_the_failed_items(alice, photo_dataset, run_jobs):
    add_templates(photo_dataset, 1)
    broken = photo_dataset.images.get(filename="chelsea.png")
    original = broken.file.open("rb").read()
    broken.file.close()
    default_storage.delete(broken.file.name)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice)
    assert job.failed_items == 1
    kept = dict(job.variants.values_list("image_id", "id"))

    default_storage.save(broken.file.name, __import__("io").BytesIO(original))
    with run_jobs():
        job_retry_failed(job=job)
    job.refresh_from_db()
    assert (job.status, job.succeeded_items, job.failed_items, job.variant_count) == ("succeeded", 4, 0, 4)
    item = job.items.get(image=broken)
    assert item.status == ItemStatus.SUCCEEDED and item.attempts == 2 and item.error == ""
    # Variants of the items that had succeeded are untouched.
    assert {k: v for k, v in job.variants.values_list("image_id", "id") if k in kept} == kept


def test_a_finished_job_is_not_run_twice(alice, photo_dataset, run_jobs, event_log):
    add_templates(photo_dataset, 1)
    job = _run(run_jobs, dataset=photo_dataset, owner=alice)
    events_before = len(event_log.of(job))
    variants_before = set(job.variants.values_list("pk", flat=True))
    with run_jobs():
        again = generate_job(job.id)
    assert again.status == JobStatus.SUCCEEDED and again.variant_count == job.variants.count() == 4
    assert set(job.variants.values_list("pk", flat=True)) == variants_before  # nothing was claimed or redone
    assert len(event_log.of(job)) == events_before


def test_items_left_running_are_reclaimed_and_variants_never_duplicated(alice, photo_dataset, held_jobs):
    add_templates(photo_dataset, 2)
    job = job_create(dataset=photo_dataset, owner=alice, compose="each")
    # Simulate a worker that died: item 0 done, item 1 running under an expired lease (files half written).
    assert generate_job(job.id) is not None
    job.refresh_from_db()
    first_run = sorted(job.variants.values_list("image_id", "template_key", "sha256"))
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, succeeded_items=1, variant_count=2, finished_at=None
    )
    items = list(job.items.order_by("index"))
    job.variants.exclude(image=items[0].image).delete()
    expired = timezone.now() - timedelta(seconds=1)
    job.items.filter(index=1).update(
        status=ItemStatus.RUNNING, worker="gone:1:abcd:T", lease_expires_at=expired
    )
    job.items.filter(index__gt=1).update(status=ItemStatus.PENDING)

    generate_job(job.id)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert (job.succeeded_items, job.variant_count) == (4, 8)
    assert sorted(job.variants.values_list("image_id", "template_key", "sha256")) == first_run
    stored = default_storage.listdir(f"variants/{job.id.hex}")[1]
    assert len(stored) == 16  # a file and a mask per variant, no leftovers


def test_a_job_over_an_empty_dataset_succeeds_at_once(alice, run_jobs):
    from tests.fixtures.factories import DatasetFactory

    dataset = DatasetFactory(owner=alice)
    add_templates(dataset, 1)
    job = _run(run_jobs, dataset=dataset, owner=alice)
    assert (job.status, job.total_items, job.variant_count) == (JobStatus.SUCCEEDED, 0, 0)


def test_a_job_fails_cleanly_when_no_segmenter_can_run(alice, photo_dataset, run_jobs, settings, event_log):
    from imaging.registry import reset_segmenters

    add_templates(photo_dataset, 1)
    settings.SAM_BACKEND = "sam"  # and no checkpoint anywhere
    reset_segmenters()
    job = _run(run_jobs, dataset=photo_dataset, owner=alice)
    assert job.status == JobStatus.FAILED and "segmenter unavailable" in job.error
    assert job.items.filter(status=ItemStatus.PENDING).count() == 4
    assert event_log.types(job)[-2:] == ["status:failed", "done"]


def test_the_snapshot_not_the_current_template_drives_a_job(alice, photo_dataset, held_jobs):
    template = add_templates(photo_dataset, 1)[0]
    job = job_create(dataset=photo_dataset, owner=alice, templates=[(template, {"hue": 90})])
    template.name = "renamed"
    template.points = [{"x_norm": 0.1, "y_norm": 0.1, "positive": True}]
    template.save()
    generate_job(job.id)
    variant = job.variants.first()
    assert variant.template_names == ["T1"]
    assert job.templates_snapshot[0]["edits"]["hue"] == 90


def test_grayscale_and_colour_photos_mix_in_one_job_with_webp(alice, make_photo_dataset, run_jobs):
    dataset = make_photo_dataset(alice, names=("camera", "chelsea"))
    add_templates(dataset, 2)
    job = _run(run_jobs, dataset=dataset, owner=alice, output_format="webp", export_mask=True)
    assert job.variant_count == 2
    for variant in job.variants.all():
        assert variant.file.name.endswith(".webp")
        with variant.file.open("rb") as handle:
            assert decode_image(handle.read()).format == "WEBP"


def test_duplicate_photo_content_across_datasets_shares_one_embedding_but_reports_it_per_owner(
    alice, bob, photo_png_160, run_jobs, use_tiny_sam, monkeypatch
):
    """The same bytes are encoded once for everyone (the cache is content-addressed); what a job reports is
    per owner, so bob's figures never reveal that alice has the same photo."""
    from tests.fixtures.factories import DatasetFactory

    mine = DatasetFactory(owner=alice)
    theirs = DatasetFactory(owner=bob)
    store_image(mine, "a.png", photo_png_160["coffee"])
    store_image(theirs, "b.png", photo_png_160["coffee"])
    add_templates(mine, 1)
    add_templates(theirs, 1)
    from imaging.sam import SamSegmenter

    encodes = []
    real_encode = SamSegmenter.encode
    monkeypatch.setattr(SamSegmenter, "encode", lambda self, rgb: encodes.append(1) or real_encode(self, rgb))
    first = _run(run_jobs, dataset=mine, owner=alice)
    second = _run(run_jobs, dataset=theirs, owner=bob)
    assert len(encodes) == 1  # one encoder pass in all
    assert (first.encoder_calls, second.encoder_calls, second.cache_hits) == (1, 1, 0)
    third = _run(run_jobs, dataset=theirs, owner=bob)  # bob's own earlier run: a hit he may be told about
    assert (third.encoder_calls, third.cache_hits) == (0, 1)
