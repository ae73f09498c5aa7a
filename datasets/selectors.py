"""Reads, and the ownership accessors every interface uses (API, pages, downloads, the SSE channel).

A foreign or malformed id raises Http404, exactly like a missing one: other users' objects do not exist.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, OuterRef, QuerySet, Subquery

from datasets.models import Dataset, DatasetImage, GenerationJob, JobItem, Variant
from samsite.common.db import get_by_public_id, require_user


def dataset_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Dataset]:
    """The user's datasets, newest first, annotated with image/template/job counts and the last job."""
    last_job = GenerationJob.objects.filter(dataset=OuterRef("pk")).order_by("-created")
    return (
        Dataset.objects.filter(owner=user)
        .annotate(
            image_count=Count("images", distinct=True),
            template_count=Count("templates", distinct=True),
            job_count=Count("jobs", distinct=True),
            last_job_status=Subquery(last_job.values("status")[:1]),
            last_job_created=Subquery(last_job.values("created")[:1]),
        )
        .order_by("-created")
    )


def dataset_get_for_user(*, user: AbstractBaseUser, dataset_id: object) -> Dataset:
    """THE ownership accessor: the dataset if ``user`` owns it, else Http404."""
    require_user(user, "dataset")
    return get_by_public_id(Dataset.objects.filter(owner=user), dataset_id, "dataset")


def image_list_for_dataset(*, dataset: Dataset) -> QuerySet[DatasetImage]:
    return dataset.images.order_by("position")


def image_get_for_user(
    *, user: AbstractBaseUser, image_id: object, dataset: Dataset | None = None
) -> DatasetImage:
    """An image of one of the user's datasets (of ``dataset`` when given), else Http404."""
    require_user(user, "image")
    queryset = DatasetImage.objects.filter(dataset__owner=user).select_related("dataset")
    if dataset is not None:
        queryset = queryset.filter(dataset=dataset)
    return get_by_public_id(queryset, image_id, "image")


def job_list_for_user(*, user: AbstractBaseUser, dataset: Dataset | None = None) -> QuerySet[GenerationJob]:
    queryset = GenerationJob.objects.filter(owner=user, dataset__owner=user).select_related("dataset")
    if dataset is not None:
        queryset = queryset.filter(dataset=dataset)
    return queryset.order_by("-created")


def job_get_for_user(*, user: AbstractBaseUser, job_id: object) -> GenerationJob:
    require_user(user, "job")
    return get_by_public_id(job_list_for_user(user=user), job_id, "job")


def job_items(*, job: GenerationJob) -> QuerySet[JobItem]:
    return job.items.select_related("image").order_by("index")


def variant_list_for_job(*, job: GenerationJob) -> QuerySet[Variant]:
    return job.variants.select_related("image").order_by("image__position", "template_key")


def variant_get_for_user(*, user: AbstractBaseUser, variant_id: object) -> Variant:
    require_user(user, "variant")
    queryset = Variant.objects.filter(job__owner=user, job__dataset__owner=user).select_related(
        "job", "image"
    )
    return get_by_public_id(queryset, variant_id, "variant")
