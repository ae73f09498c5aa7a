"""Dataset originals are decoded once per machine: a re-run reads no original bytes and makes the same files;
``DECODED_CACHE_MB=0`` turns the cache off; ``prune --clear-cache`` empties it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command

from datasets import image_io
from datasets.image_io import decode_dataset_image, decoded_cache
from datasets.jobs.services import job_create
from datasets.models import JobStatus
from imaging.codecs import decode_image
from tests.fixtures.factories import add_templates

pytestmark = pytest.mark.django_db


@pytest.fixture
def original_reads(monkeypatch) -> list[str]:
    """Names of the stored files read through ``read_file_bytes`` by the decoded-image accessor."""
    reads: list[str] = []
    real = image_io.read_file_bytes

    def counting(file):
        reads.append(file.name)
        return real(file)

    monkeypatch.setattr(image_io, "read_file_bytes", counting)
    return reads


def _variant_bytes(job) -> dict[tuple, bytes]:
    out = {}
    for variant in job.variants.all():
        with variant.file.open("rb") as handle:
            out[(variant.image_id, variant.template_key, "file")] = handle.read()
        with variant.mask_file.open("rb") as handle:
            out[(variant.image_id, variant.template_key, "mask")] = handle.read()
    return out


def test_a_second_job_over_a_dataset_reads_no_original_and_makes_the_same_files(
    alice, photo_dataset, run_jobs, original_reads
):
    add_templates(photo_dataset, 2)
    originals = {image.file.name for image in photo_dataset.images.all()}
    with run_jobs():
        first = job_create(dataset=photo_dataset, owner=alice, compose="each", export_mask=True)
    assert originals <= set(original_reads)  # the first run decoded each original ...
    assert decoded_cache().count() == len(originals)  # ... and kept its pixels
    original_reads.clear()

    with run_jobs():
        second = job_create(dataset=photo_dataset, owner=alice, compose="each", export_mask=True)

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == second.status == JobStatus.SUCCEEDED
    assert not originals & set(original_reads)  # every decode of the re-run was a hit
    before, after = _variant_bytes(first), _variant_bytes(second)
    assert len(before) == 2 * 2 * len(originals)  # two templates, variant and mask, per image
    assert after == before  # byte-identical variants and masks


def test_the_accessor_answers_what_a_decode_of_the_stored_file_gives(alice, photo_dataset, original_reads):
    for image in photo_dataset.images.all():
        with image.file.open("rb") as handle:
            reference = decode_image(handle.read())
        for _ in range(2):
            got = decode_dataset_image(image)
            assert np.array_equal(got.rgb, reference.rgb)
            assert (got.is_grayscale, got.format) == (reference.is_grayscale, reference.format)
    assert len(original_reads) == photo_dataset.images.count()


def test_the_upload_pixel_limit_applies_to_hits(alice, photo_dataset, settings):
    from imaging.errors import ImageDecodeError

    image = photo_dataset.images.first()
    decode_dataset_image(image)
    settings.MAX_IMAGE_MEGAPIXELS = 0  # lowered since the decode was stored: now below any image
    with pytest.raises(ImageDecodeError, match="image too large"):
        decode_dataset_image(image)


def test_a_zero_bound_decodes_every_time_and_touches_no_disk(alice, photo_dataset, settings, original_reads):
    settings.DECODED_CACHE_MB = 0
    image = photo_dataset.images.first()
    first, second = decode_dataset_image(image), decode_dataset_image(image)
    assert np.array_equal(first.rgb, second.rgb)
    assert original_reads == [image.file.name, image.file.name]
    assert not settings.DECODED_CACHE_DIR.exists()


def test_prune_clear_cache_empties_the_decoded_cache(alice, photo_dataset):
    images = list(photo_dataset.images.all())
    for image in images:
        decode_dataset_image(image)
    assert decoded_cache().count() == len(images)

    dry = io.StringIO()
    call_command("prune", "--clear-cache", "--dry-run", stdout=dry)
    assert f"would delete {len(images)} decoded images" in dry.getvalue()
    assert decoded_cache().count() == len(images)

    out = io.StringIO()
    call_command("prune", "--clear-cache", stdout=out)
    assert f"deleted {len(images)} decoded images" in out.getvalue()
    assert "cached embeddings" in out.getvalue()
    assert decoded_cache().count() == 0
