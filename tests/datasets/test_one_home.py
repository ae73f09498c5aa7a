"""The answers picked where copies of a rule disagreed before they got one home (issue 15):

- unique names: one suffix style, ``name-2.ext``, for uploaded display names and archive entries alike;
- characters: one rule (``visible_text``) for file names and display names (a tab is a space in both);
- image classes: one validator, ``datasets.models.image_class_from_input``, for every interface;
- stored files: a variant owns its image, its mask and its thumbnail, whichever delete removes it.
"""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from datasets.jobs.services import ItemResult, item_finish, job_delete
from datasets.models import STACK_TEMPLATE_KEY, Variant, image_class_from_input
from datasets.services.names import (
    clean_display_name,
    safe_name_part,
    sanitize_filename,
    unique_entry_name,
    unique_filename,
)
from datasets.services.thumbnails import variant_thumbnail_ensure
from datasets.services.uploads import images_upload
from samsite.common.errors import ServiceError
from tests.fixtures.factories import DatasetFactory, GenerationJobFactory, JobItemFactory, VariantFactory
from tests.fixtures.images import png_bytes
from tests.fixtures.uploads import upload_file


def test_uploads_and_archives_make_names_unique_with_the_same_suffix():
    assert unique_filename("photo.png", {"photo.png"}) == "photo-2.png"
    assert unique_entry_name("photo", "png", {"photo.png"}) == "photo-2.png"
    assert unique_entry_name("masks/photo", "png", {"masks/photo.png", "masks/photo-2.png"}) == (
        "masks/photo-3.png"
    )


def test_a_deduplicated_upload_name_keeps_its_stem_in_archives():
    assert (
        safe_name_part(unique_filename("Photo one.png", {"photo one.png"})[: -len(".png")]) == "Photo one-2"
    )


@pytest.mark.django_db
def test_a_second_upload_of_a_name_is_suffixed_dash_two():
    dataset = DatasetFactory()
    images_upload(dataset=dataset, files=[upload_file("a.png", png_bytes(seed=1))])
    result = images_upload(dataset=dataset, files=[upload_file("A.png", png_bytes(seed=2))])
    assert [image.filename for image in result.created] == ["A-2.png"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("tab\tseparated", "tab separated"),  # was "tabseparated" for display names
        ("line\nbreak", "line break"),
        ("bidi\u202eoverride", "bidioverride"),
        ("private\ue000use", "privateuse"),  # was kept in display names
        ("cafe\u0301", "caf\u00e9"),  # NFC, as file names
        ("a/b: c", "a/b: c"),  # a display name is not a file name: slashes and colons stay
    ],
)
def test_display_names_and_file_names_share_the_character_rule(raw, expected):
    assert clean_display_name(raw) == expected
    assert sanitize_filename(raw.replace("/", "_")) == expected.replace("/", "_")


def test_display_names_are_refused_rather_than_repaired():
    for value, message in [(7, "name must be a string"), (" \t\u200b", "name must not be blank")]:
        with pytest.raises(ServiceError) as caught:
            clean_display_name(value)
        assert (caught.value.code, caught.value.message) == ("invalid_name", message)


@pytest.mark.parametrize(("value", "expected"), [("pass", "pass"), ("fail", "fail"), ("", ""), (None, "")])
def test_image_class_from_input_accepts_the_three_classes(value, expected):
    assert image_class_from_input(value) == expected
    assert image_class_from_input("none") == ""


@pytest.mark.parametrize("value", ["all", "PASS", "maybe", 1, ["pass"]])
def test_image_class_from_input_refuses_anything_else_naming_the_field(value):
    with pytest.raises(ServiceError) as caught:
        image_class_from_input(value, field="class")
    assert (caught.value.code, caught.value.message, caught.value.extra) == (
        "invalid_class",
        "class must be one of '', 'pass', 'fail'",
        {"field": "class"},
    )


def test_an_interface_may_add_its_own_word_for_no_class():
    assert image_class_from_input("all", field="class_filter", also_blank=("all",)) == ""


@pytest.mark.django_db
def test_deleting_a_job_deletes_its_variant_thumbnails(django_capture_on_commit_callbacks):
    variant = VariantFactory(job__status="succeeded", sha256="a" * 64)
    thumbnail = variant_thumbnail_ensure(variant=variant).name
    assert default_storage.exists(thumbnail)

    with django_capture_on_commit_callbacks(execute=True):
        job_delete(job=variant.job)

    assert not default_storage.exists(variant.file.name)
    assert not default_storage.exists(thumbnail)  # left behind before: only file and mask were deleted


@pytest.mark.django_db
def test_a_rerun_deletes_the_replaced_variant_with_its_thumbnail(django_capture_on_commit_callbacks):
    job = GenerationJobFactory(status="running", total_items=1)
    item = JobItemFactory(job=job, status="running", worker="w:1:abcd:T")
    old = VariantFactory(job=job, image=item.image, sha256="a" * 64)
    old_thumbnail = variant_thumbnail_ensure(variant=old).name
    new = Variant(job=job, image=item.image, template_key=STACK_TEMPLATE_KEY, width=64, height=48)
    new.sha256 = "b" * 64
    new.file.save("variant.png", ContentFile(png_bytes(seed=5)), save=False)

    with django_capture_on_commit_callbacks(execute=True):
        item_finish(worker="w:1:abcd:T", job=job, item=item, result=ItemResult("succeeded", variants=[new]))

    assert not default_storage.exists(old.file.name) and not default_storage.exists(old_thumbnail)
    assert default_storage.exists(new.file.name)
    assert list(Variant.objects.filter(job=job).values_list("sha256", flat=True)) == ["b" * 64]
