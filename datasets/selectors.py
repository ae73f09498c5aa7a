"""Reads, and the ownership accessors every interface uses (API, pages, downloads, the SSE channel).

A foreign or malformed id raises Http404, exactly like a missing one: other users' objects do not exist.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, F, OuterRef, QuerySet, Subquery, Window
from django.db.models.functions import RowNumber

from datasets.models import Dataset, DatasetImage, GenerationJob, ItemStatus, JobItem, Variant
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


# --- reads the pages shape (frontend.presenters): each a query the presenters used to run themselves ------------


def image_count_for_dataset(*, dataset: Dataset) -> int:
    return dataset.images.count()


def job_count_for_dataset(*, dataset: Dataset) -> int:
    return dataset.jobs.count()


def image_strips_for_datasets(*, datasets: Sequence[Dataset], size: int) -> dict[object, list[DatasetImage]]:
    """The first ``size`` images (by position) of each dataset, keyed by dataset pk, in one query for all.

    Only the fields a thumbnail strip draws are loaded; a dataset without images has no key.
    """
    if not datasets:
        return {}
    rows = (
        DatasetImage.objects.filter(dataset__in=datasets)
        .annotate(rank=Window(RowNumber(), partition_by=[F("dataset_id")], order_by=F("position").asc()))
        .filter(rank__lte=size)
        .only("id", "dataset_id", "filename", "thumbnail", "position")
        .order_by("dataset_id", "position")
    )
    by_dataset: dict[object, list[DatasetImage]] = defaultdict(list)
    for image in rows:
        by_dataset[image.dataset_id].append(image)
    return dict(by_dataset)


def job_items_done_count(*, job: GenerationJob, since: datetime) -> int:
    """How many of the job's items reached a final state (succeeded, failed, skipped) at or after ``since``."""
    return JobItem.objects.filter(job=job, status__in=JobItem.DONE, updated__gte=since).count()


def job_item_at(*, job: GenerationJob, index: int) -> JobItem | None:
    """The job's item at position ``index`` (with its image), or None when the job has no such item."""
    return job_items(job=job).filter(index=index).first()


def job_items_failed(*, job: GenerationJob) -> list[JobItem]:
    """The job's failed items, in job order."""
    return list(job_items(job=job).filter(status=ItemStatus.FAILED))


def variant_list_for_job_images(*, job: GenerationJob, image_ids: Sequence[object]) -> QuerySet[Variant]:
    """The job's variants of the given images only, in the order of ``variant_list_for_job``."""
    return variant_list_for_job(job=job).filter(image_id__in=image_ids)


def job_get_internal(*, job_id: object) -> GenerationJob | None:
    """The job by primary key with its dataset, or None: NO ownership check, for code that already passed one
    (the SSE stream re-reads the job it authorised when it opened)."""
    return GenerationJob.objects.select_related("dataset").filter(pk=job_id).first()
