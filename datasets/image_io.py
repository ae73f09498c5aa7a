"""Reading stored dataset files back into pixels (storage-agnostic: ``open()``, never ``.path``).

A dataset image's original is decoded through :func:`decode_dataset_image`, which keeps the decoded pixels in
the machine's decoded cache (``DECODED_CACHE_DIR``, bounded by ``DECODED_CACHE_MB``); every other stored file
(variants, masks, thumbnails, working copies) through :func:`decode_stored_image`.
"""

from __future__ import annotations

import threading
from typing import Protocol

from django.conf import settings
from django.core.files import File

from imaging.codecs import DecodedImage, decode_image
from imaging.decoded_cache import DecodedImageCache

_cache_lock = threading.Lock()
_cache: DecodedImageCache | None = None
_cache_key: tuple | None = None


class StoredOriginal(Protocol):
    """What :func:`decode_dataset_image` needs of a ``DatasetImage`` (the models import this module, so it
    names the row's shape rather than its class): the stored original and the sha256 of its bytes."""

    sha256: str
    file: File


def read_file_bytes(file: File) -> bytes:
    with file.open("rb") as handle:
        return handle.read()


def _max_image_pixels() -> int:
    # Imported here: the uploads package imports the models, which import this module.
    from datasets.services.uploads.limits import max_image_pixels

    return max_image_pixels()


def decode_stored_image(file: File) -> DecodedImage:
    """Decode an image already accepted at upload (same pixel limit as uploads)."""
    return decode_image(read_file_bytes(file), max_pixels=_max_image_pixels())


def decoded_cache() -> DecodedImageCache:
    """The process's decoded cache on DECODED_CACHE_DIR (rebuilt when the settings change; disabled, touching
    no disk, when DECODED_CACHE_MB is 0). Content-addressed, so sharing it across users leaks nothing."""
    global _cache, _cache_key
    key = (str(settings.DECODED_CACHE_DIR), settings.DECODED_CACHE_MB)
    with _cache_lock:
        if _cache is None or _cache_key != key:
            _cache = DecodedImageCache(
                settings.DECODED_CACHE_DIR, max_bytes=settings.DECODED_CACHE_MB * 1024 * 1024
            )
            _cache_key = key
        return _cache


def decode_dataset_image(image: StoredOriginal) -> DecodedImage:
    """The pixels of a dataset image's original (``image.file``), decoded once per machine and decoder.

    Keyed by ``image.sha256``, which the upload computed from exactly the stored bytes, so the stored original
    is read only on a miss. The upload pixel limit (MAX_IMAGE_MEGAPIXELS) applies to hits too. Raises
    ``ImageDecodeError`` / ``OSError`` like :func:`decode_stored_image`.
    """
    return decoded_cache().get_or_decode(
        image.sha256, lambda: read_file_bytes(image.file), max_pixels=_max_image_pixels()
    )


# --- stored names and served content types: from the decoded format, never from a client's filename ----------

#: Storage suffix of each decodable format (``DecodedImage.format``).
FORMAT_SUFFIXES = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "WEBP": ".webp",
    "GIF": ".gif",
}
#: The only content types a file view sends inline, by storage suffix; anything else is an attachment.
SAFE_CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
#: Sent for a stored name whose suffix is not a known image suffix, always as an attachment.
OPAQUE_CONTENT_TYPE = "application/octet-stream"


def stored_suffix(image_format: str) -> str:
    """The storage suffix for a decoded image format (``.img`` for one without a known suffix)."""
    return FORMAT_SUFFIXES.get(image_format, ".img")


def safe_suffix(name: str) -> str:
    """``name``'s suffix when it is a known image suffix, else ``""`` (storage names never carry ``.html``)."""
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot >= 0 else ""
    return suffix if suffix in SAFE_CONTENT_TYPES else ""


def served_content_type(name: str) -> str | None:
    """The image content type to serve ``name`` with inline, or None: serve it as an opaque attachment.

    Stored names get their suffix from the decoded format at upload (:func:`stored_suffix`), so for them this
    is the decoded format's type; rows written before that rule fall back to an attachment.
    """
    return SAFE_CONTENT_TYPES.get(safe_suffix(name) or "-")
