"""Dataset writes: create, rename, delete (with every stored file it owns)."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from datasets.models import Dataset, DatasetImage, Variant
from datasets.services.files import image_stored_names, rows_delete_with_files, variant_stored_names
from datasets.services.names import clean_display_name
from samsite.common.errors import ServiceError


def dataset_create(*, owner: AbstractBaseUser, name: str) -> Dataset:
    """Create an empty dataset owned by ``owner``. Raises ServiceError("invalid_name") for a blank/long name."""
    dataset = Dataset(owner=owner, name=clean_display_name(name))
    dataset.full_clean()
    dataset.save()
    return dataset


def dataset_rename(*, dataset: Dataset, name: str) -> Dataset:
    """Rename ``dataset`` (same rules as :func:`dataset_create`)."""
    dataset.name = clean_display_name(name)
    dataset.save(update_fields=["name", "updated"])
    return dataset


def dataset_set_checkpoint(*, dataset: Dataset, checkpoint: object) -> Dataset:
    """Pick the model ``dataset`` segments with: the file name of a usable checkpoint in SAM_MODELS_DIR
    (``datasets.segmentation.available_models``), or blank / None for the site's default. Raises
    ServiceError("invalid_checkpoint", field="checkpoint", choices=[usable names]) for anything else,
    including a file whose tensors match no family."""
    from datasets.segmentation import available_models

    name = "" if checkpoint is None else checkpoint
    if not isinstance(name, str):
        raise ServiceError("invalid_checkpoint", "checkpoint must be a file name", field="checkpoint")
    name = name.strip()
    if name:
        models = {info.name: info for info in available_models()}
        usable = sorted(n for n, info in models.items() if info.error is None)
        info = models.get(name)
        if info is None or info.error is not None:
            why = f"{name!r} is not a checkpoint in SAM_MODELS_DIR" if info is None else info.error
            listed = ", ".join(usable) if usable else "none"
            raise ServiceError(
                "invalid_checkpoint",
                f"{why}; choose one of: {listed} (or blank for the site's model)",
                field="checkpoint",
                choices=usable,
            )
    dataset.checkpoint = name
    dataset.save(update_fields=["checkpoint", "updated"])
    return dataset


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete ``dataset`` with its images, templates, jobs and variants.

    Stored files (originals, thumbnails, variants, variant masks) are deleted after the transaction commits,
    so a rolled-back delete never loses a file that a surviving row still points to.
    """
    with transaction.atomic():
        # The row lock makes a concurrent upload wait, so no file is added after the names are collected.
        dataset_lock(dataset=dataset)
        owned = [
            *image_stored_names(DatasetImage.objects.filter(dataset=dataset)),
            *variant_stored_names(Variant.objects.filter(job__dataset=dataset)),
        ]
        rows_delete_with_files(dataset, owned)


def dataset_labels_register(*, dataset: Dataset, labels: Iterable[str]) -> list[str]:
    """Append the labels the registry does not hold yet (in the given order) and return the registry.

    The registry (``Dataset.labels``) numbers a dataset's categories for every export: a label's id is its
    index + 1, fixed on first use, never renumbered or reused (a deleted template or a renamed label keeps
    its old label's id taken). Locks the dataset row, so concurrent template writes append one after the
    other; a no-op (no lock, no write) when every label is registered already.
    """
    wanted = [label for label in dict.fromkeys(labels) if label]
    if all(label in (dataset.labels or []) for label in wanted):
        return list(dataset.labels or [])
    with transaction.atomic():
        dataset_lock(dataset=dataset)
        registry = list(Dataset.objects.filter(pk=dataset.pk).values_list("labels", flat=True).get() or [])
        added = [label for label in wanted if label not in registry]
        if added:
            registry += added
            Dataset.objects.filter(pk=dataset.pk).update(labels=registry)
        dataset.labels = registry
    return registry


def dataset_lock(*, dataset: Dataset) -> None:
    """Take the dataset's row lock for the rest of the current transaction.

    Every write that numbers or counts a dataset's children (upload positions and the image limit, template
    positions, delete) takes it first, so concurrent requests queue instead of colliding on unique positions.
    """
    list(Dataset.objects.select_for_update().filter(pk=dataset.pk).values_list("pk", flat=True))
