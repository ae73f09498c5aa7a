"""Template reads, always scoped through the owning dataset."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from datasets.models import Dataset
from samsite.common.db import get_by_public_id, require_user
from templates_app.models import Template


def template_list_for_dataset(*, dataset: Dataset) -> QuerySet[Template]:
    """The dataset's templates in save order (the order stacking applies them in)."""
    return dataset.templates.select_related("reference_image").order_by("position")


def template_get_for_user(
    *, user: AbstractBaseUser, template_id: object, dataset: Dataset | None = None
) -> Template:
    """A template of one of the user's datasets (of ``dataset`` when given), else Http404."""
    require_user(user, "template")
    queryset = Template.objects.filter(dataset__owner=user).select_related("dataset", "reference_image")
    if dataset is not None:
        queryset = queryset.filter(dataset=dataset)
    return get_by_public_id(queryset, template_id, "template")


def template_count_for_dataset(*, dataset: Dataset) -> int:
    return dataset.templates.count()
