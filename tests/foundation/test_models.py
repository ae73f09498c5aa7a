"""Model constraints hold on the database itself, not only in forms."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from datasets.models import STACK_TEMPLATE_KEY, GenerationJob, JobStatus
from tests.fixtures.factories import (
    ComponentFactory,
    DatasetImageFactory,
    GenerationJobFactory,
    JobItemFactory,
    TemplateFactory,
    VariantFactory,
)

pytestmark = pytest.mark.django_db


def test_it_rejects_a_second_item_for_the_same_job_and_image():
    item = JobItemFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        JobItemFactory(job=item.job, image=item.image, index=item.index + 1)


def test_it_rejects_a_duplicate_variant_per_job_image_and_template():
    variant = VariantFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        VariantFactory(job=variant.job, image=variant.image, template_key=STACK_TEMPLATE_KEY)


def test_it_allows_one_variant_per_template_of_the_same_image():
    variant = VariantFactory(template_key="a" * 32)
    VariantFactory(job=variant.job, image=variant.image, template_key="b" * 32)
    assert variant.job.variants.count() == 2


def test_it_rejects_two_images_with_the_same_display_name_in_a_dataset():
    image = DatasetImageFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        DatasetImageFactory(dataset=image.dataset, filename=image.filename, position=99)


def test_it_rejects_the_same_content_twice_in_a_dataset():
    image = DatasetImageFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        DatasetImageFactory(dataset=image.dataset, sha256=image.sha256, filename="other.png", position=98)


def test_the_same_content_may_live_in_two_datasets():
    image = DatasetImageFactory()
    other = DatasetImageFactory(sha256=image.sha256)
    assert other.dataset_id != image.dataset_id


def test_component_numbers_are_unique_per_session():
    component = ComponentFactory(number=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        ComponentFactory(session=component.session, number=1)


def test_template_positions_are_unique_per_dataset():
    template = TemplateFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        TemplateFactory(dataset=template.dataset, position=template.position)


def test_template_points_are_validated_in_unit_range():
    from django.core.exceptions import ValidationError

    template = TemplateFactory.build(points=[{"x_norm": 1.5, "y_norm": 0.2}])
    with pytest.raises(ValidationError) as excinfo:
        template.full_clean(exclude=["dataset"])
    assert "points" in excinfo.value.message_dict


def test_template_points_need_a_positive_point():
    from django.core.exceptions import ValidationError

    template = TemplateFactory.build(points=[{"x_norm": 0.5, "y_norm": 0.2, "positive": False}])
    with pytest.raises(ValidationError, match="positive"):
        template.full_clean(exclude=["dataset"])


def test_public_ids_are_32_char_lowercase_hex():
    job = GenerationJobFactory()
    assert len(job.public_id) == 32
    assert job.public_id == job.public_id.lower()
    assert job.status == JobStatus.QUEUED
    assert GenerationJob.objects.get(pk=job.public_id) == job
