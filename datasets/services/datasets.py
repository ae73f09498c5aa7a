"""Dataset writes: create, rename, delete (with every stored file it owns)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import PurePosixPath

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import default_storage
from django.db import transaction

from datasets.models import Dataset, DatasetImage, Variant
from datasets.services.names import clean_display_name
from datasets.services.thumbnails import variant_thumbnail_names
from samsite.errors import ServiceError

logger = logging.getLogger(__name__)


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
        image_files = list(DatasetImage.objects.filter(dataset=dataset).values_list("file", "thumbnail"))
        names = [
            *_field_names(image_files),
            *(working_copy_name(file, dataset.id.hex) for file, _thumbnail in image_files if file),
            *_field_names(Variant.objects.filter(job__dataset=dataset).values_list("file", "mask_file")),
            *variant_thumbnail_names(
                Variant.objects.filter(job__dataset=dataset).values_list("file", "sha256")
            ),
        ]
        dataset.delete()
        transaction.on_commit(lambda: delete_stored_files(names))


def dataset_lock(*, dataset: Dataset) -> None:
    """Take the dataset's row lock for the rest of the current transaction.

    Every write that numbers or counts a dataset's children (upload positions and the image limit, template
    positions, delete) takes it first, so concurrent requests queue instead of colliding on unique positions.
    """
    list(Dataset.objects.select_for_update().filter(pk=dataset.pk).values_list("pk", flat=True))


def working_copy_name(file_name: str, dataset_hex: str) -> str:
    """Storage name of the preview working copy of the stored original ``file_name`` (see
    ``datasets.services.previews.working_image``); deleted with its image."""
    return f"working/{dataset_hex}/{PurePosixPath(file_name).stem}.png"


def _field_names(rows: Iterable[tuple[str, ...]]) -> list[str]:
    return [name for row in rows for name in row if name]


def delete_stored_files(names: Iterable[str]) -> None:
    """Best-effort deletion from default storage: a file that is already gone is not an error."""
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # a storage hiccup must not turn a committed delete into a 500
            logger.warning("could not delete stored file %s", name, exc_info=True)
