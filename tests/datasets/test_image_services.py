"""Upload filename rules (datasets.services.names), storage cleanup on rollback (datasets.services.uploads),
and the image services after upload: class and delete (datasets.services.images)."""

from __future__ import annotations

import gc

import pytest
from django.db import transaction

from datasets.models import DatasetImage
from datasets.services.images import image_delete, image_set_class
from datasets.services.names import sanitize_filename, unique_filename
from datasets.services.uploads import RejectedFile, images_upload
from samsite.common.errors import ServiceError
from tests.fixtures.factories import DatasetFactory, DatasetImageFactory, TemplateFactory, VariantFactory
from tests.fixtures.images import png_bytes
from tests.fixtures.uploads import stored_files, upload_file


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("photo.png", "photo.png"),
        ("a/b/c.PNG", "c.PNG"),
        ("..\\..\\x.png", "x.png"),
        ("  spaced   out\tname .jpg ", "spaced out name.jpg"),
        ("bell\x07\x00.png", "bell.png"),
        ("...dots.png", "dots.png"),
        (".png", "image.png"),
        ("", "image"),
        ("right\u202eto-left.png", "rightto-left.png"),
        ("no_extension", "no_extension"),
    ],
)
def test_sanitize_filename(raw, expected):
    assert sanitize_filename(raw) == expected


def test_sanitize_filename_keeps_the_extension_when_cutting():
    assert sanitize_filename("a" * 500 + ".tiff", max_length=20) == "a" * 15 + ".tiff"


def test_unique_filename_counts_up_case_insensitively():
    taken = {"part.png", "part-2.png"}
    assert unique_filename("Part.png", taken) == "Part-3.png"
    assert unique_filename("part-2.png", taken) == "part-2-2.png"  # a "-n" of the user's own is not parsed
    assert unique_filename("other.png", taken) == "other.png"
    assert {"part-3.png", "part-2-2.png", "other.png"} <= taken


@pytest.mark.django_db
def test_no_files_at_all_is_the_seed_apis_message():
    with pytest.raises(ServiceError) as caught:
        images_upload(dataset=DatasetFactory(), files=[])
    assert (caught.value.code, caught.value.message, caught.value.status) == (
        "no_files",
        "provide images[] or zip",
        400,
    )


@pytest.mark.django_db
def test_the_result_lists_created_rows_and_rejections():
    dataset = DatasetFactory()
    result = images_upload(
        dataset=dataset, files=[upload_file("a.png", png_bytes()), upload_file("b.png", b"no")]
    )

    assert [image.filename for image in result.created] == ["a.png"]
    assert result.created[0].pk and DatasetImage.objects.filter(pk=result.created[0].pk).exists()
    assert result.rejected == [
        RejectedFile("b.png", "invalid_image: not an image (unrecognised or unsupported format)")
    ]


@pytest.mark.django_db(transaction=True)
def test_stored_files_are_deleted_when_the_callers_transaction_rolls_back(settings):
    dataset = DatasetFactory()
    with pytest.raises(RuntimeError), transaction.atomic():
        images_upload(dataset=dataset, files=[upload_file("a.png", png_bytes())])
        assert len(stored_files(settings)) == 2
        raise RuntimeError("the caller failed after the upload")

    assert DatasetImage.objects.count() == 0
    assert stored_files(settings) == []


@pytest.mark.django_db(transaction=True)
def test_stored_files_are_kept_when_the_transaction_commits(settings):
    dataset = DatasetFactory()
    with transaction.atomic():
        images_upload(dataset=dataset, files=[upload_file("a.png", png_bytes())])
    gc.collect()

    image = DatasetImage.objects.get()
    assert stored_files(settings) == sorted([image.file.name, image.thumbnail.name])


@pytest.mark.django_db
def test_image_set_class_accepts_the_three_classes_only():
    image = DatasetImageFactory()
    assert image_set_class(image=image, image_class="fail").image_class == "fail"
    assert image_set_class(image=image, image_class=None).image_class == ""
    with pytest.raises(ServiceError) as caught:
        image_set_class(image=image, image_class="maybe")
    assert caught.value.code == "invalid_class" and caught.value.extra == {"field": "image_class"}


@pytest.mark.django_db
def test_image_delete_removes_its_variants_and_files_after_commit(
    settings, django_capture_on_commit_callbacks
):
    image = DatasetImageFactory()
    variant = VariantFactory(image=image, job__dataset=image.dataset)
    template = TemplateFactory(dataset=image.dataset, reference_image=image)
    names = [image.file.name, image.thumbnail.name, variant.file.name]
    assert set(names) <= set(stored_files(settings))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        image_delete(image=image)
    assert set(names) <= set(stored_files(settings))  # not before the commit
    for callback in callbacks:
        callback()

    assert not set(names) & set(stored_files(settings))
    template.refresh_from_db()
    assert template.reference_image is None
