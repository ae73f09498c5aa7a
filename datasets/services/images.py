"""Image writes after upload: the pass/fail class and deletion (uploads: ``datasets.services.uploads``)."""

from __future__ import annotations

from django.db import transaction

from datasets.models import DatasetImage, Variant, image_class_from_input
from datasets.services.files import image_stored_names, rows_delete_with_files, variant_stored_names


def image_set_class(*, image: DatasetImage, image_class: object) -> DatasetImage:
    """Set the pass/fail class ("", "none" or None = no class). ServiceError("invalid_class") otherwise."""
    image.image_class = image_class_from_input(image_class)
    image.save(update_fields=["image_class", "updated"])
    return image


def image_delete(*, image: DatasetImage) -> None:
    """Delete the image with its variants (job items go with it); its stored files go after commit."""
    with transaction.atomic():
        owned = [*image_stored_names([image]), *variant_stored_names(Variant.objects.filter(image=image))]
        rows_delete_with_files(image, owned)
