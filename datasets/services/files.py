"""Stored files: the names a row owns in storage, and when those files are deleted.

Every delete of images, variants, jobs or datasets goes through :func:`rows_delete_with_files`: the names are
collected before the rows go, and the files are deleted only after the transaction commits, so a rolled-back
delete never loses a file that a surviving row still points to. Files written inside a transaction that may
roll back (an upload) are registered with :func:`delete_files_on_rollback`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath

from django.core.files.storage import default_storage
from django.db import models, transaction

from datasets.models import DatasetImage, Variant
from datasets.services.thumbnails import variant_thumbnail_names

logger = logging.getLogger(__name__)


# --- names ------------------------------------------------------------------------------------------------


def working_copy_name(file_name: str, dataset_hex: str) -> str:
    """Storage name of the preview working copy of the stored original ``file_name`` (see
    ``datasets.services.previews.working_image``); deleted with its image."""
    return f"working/{dataset_hex}/{PurePosixPath(file_name).stem}.png"


def image_stored_names(images: Iterable[DatasetImage]) -> list[str]:
    """The files these images own (original, upload thumbnail, preview working copy), not their variants'."""
    if isinstance(images, models.QuerySet):
        images = images.only("file", "thumbnail", "dataset")
    names = []
    for image in images:
        names += [image.file.name, image.thumbnail.name]
        if image.file.name:
            names.append(working_copy_name(image.file.name, image.dataset_id.hex))
    return [name for name in names if name]


def variant_stored_names(variants: Iterable[Variant]) -> list[str]:
    """The files these variants own: the image, the mask and every name its thumbnail may have."""
    if isinstance(variants, models.QuerySet):
        variants = variants.only("file", "mask_file", "sha256")
    names, thumbnailed = [], []
    for variant in variants:
        names += [variant.file.name, variant.mask_file.name]
        thumbnailed.append((variant.file.name, variant.sha256))
    return [name for name in names if name] + variant_thumbnail_names(thumbnailed)


# --- lifetime ---------------------------------------------------------------------------------------------


def delete_stored_files(names: Iterable[str]) -> None:
    """Best-effort deletion from default storage now: a file that is already gone is not an error."""
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # a storage hiccup must not turn a committed delete into a 500
            logger.warning("could not delete stored file %s", name, exc_info=True)


def files_delete_on_commit(names: Iterable[str]) -> None:
    """Delete these stored files once the current transaction commits (at once outside one); nothing when
    it rolls back. Blank names are ignored."""
    doomed = [name for name in names if name]
    if doomed:
        transaction.on_commit(lambda: delete_stored_files(doomed))


def rows_delete_with_files(rows: models.Model | models.QuerySet, names: Iterable[str]) -> None:
    """Delete ``rows`` (one instance or a queryset, cascades included) now and the stored files ``names``
    after commit. ``names`` is read before the rows go: pass what the rows own (``image_stored_names``,
    ``variant_stored_names``), inside the transaction that holds the locks keeping it complete."""
    doomed = list(names)
    rows.delete()
    files_delete_on_commit(doomed)


class _CommitSentinel:
    """Referenced only by an on_commit callback: Django drops that callback when the transaction (or the
    savepoint it was registered in) rolls back, the sentinel is then collected and its finalizer deletes the
    files. When the transaction commits, the callback marks the files as kept first."""

    __slots__ = ("__weakref__", "state")

    def __init__(self, state: dict):
        self.state = state

    def committed(self) -> None:
        self.state["committed"] = True


def _delete_unless_committed(names: tuple[str, ...], state: dict) -> None:
    if not state["committed"]:
        delete_stored_files(names)


def delete_files_on_rollback(names: Sequence[str]) -> None:
    """Delete these stored files if the current transaction rolls back (call inside ``transaction.atomic``).

    Django has no on-rollback hook; this relies on rollback discarding the on_commit callbacks, which frees
    the sentinel they reference (CPython frees it at once; a traceback cycle can delay it until the garbage
    collector runs, which is why failing code paths also delete their files explicitly).
    """
    if not names:
        return
    state = {"committed": False}
    sentinel = _CommitSentinel(state)
    finalizer = weakref.finalize(sentinel, _delete_unless_committed, tuple(names), state)
    finalizer.atexit = False
    transaction.on_commit(sentinel.committed)
