"""Upload limits, read from settings on every call so that tests and settings overrides take effect at once."""

from __future__ import annotations

from django.conf import settings

from samsite.common.errors import ServiceError


def max_upload_bytes() -> int:
    """Per-file size limit (MAX_UPLOAD_MB), for direct uploads and ZIP entries alike."""
    return settings.MAX_UPLOAD_MB * 1024 * 1024


def max_zip_uncompressed_bytes() -> int:
    """Total uncompressed size of a ZIP's image entries (MAX_ZIP_UNCOMPRESSED_MB)."""
    return settings.MAX_ZIP_UNCOMPRESSED_MB * 1024 * 1024


def max_zip_entries() -> int:
    """Entries of any kind in one archive's central directory (generous: folders and sidecar files count)."""
    return max(1000, 4 * settings.MAX_IMAGES_PER_DATASET)


def max_image_pixels() -> int:
    """Pixels one decoded image may have (MAX_IMAGE_MEGAPIXELS), at upload and whenever a stored one is read."""
    return settings.MAX_IMAGE_MEGAPIXELS * 1_000_000


def size_text(size: int) -> str:
    """``size`` bytes as the limit messages write it (``"12.3 MB"``)."""
    return f"{size / (1024 * 1024):.1f} MB"


def image_capacity_check(would_reach: int) -> None:
    """ServiceError("max_images_exceeded", "max_images_exceeded:<n>/<max>") when a dataset would hold more
    than MAX_IMAGES_PER_DATASET images."""
    limit = settings.MAX_IMAGES_PER_DATASET
    if would_reach > limit:
        raise ServiceError(
            "max_images_exceeded", f"max_images_exceeded:{would_reach}/{limit}", count=would_reach, max=limit
        )
