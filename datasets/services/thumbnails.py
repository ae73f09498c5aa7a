"""Variant thumbnails for the job page: made once per variant, kept in storage under a deterministic name.

A job page of 22 variants of 12 MP photos moved 148 MB when every tile loaded the full-size file (issue 16);
a 320 px thumbnail is ~10-30 kB. Full size stays for the lightbox and the download.

* The name is derived from the variant's own storage name and its content hash
  (``variants/<job>/<image>-<key>.thumb-<sha12>.webp``): a re-run that rewrites the variant's file with other
  content gets another thumbnail name, so a stale thumbnail is never served, and any process on any machine
  computes the same name without asking anyone (no process-local state).
* Colour variants get a WebP thumbnail. A grayscale variant (one channel since issue 16) gets a one-channel
  JPEG: WebP has no one-channel layout, and the thumbnail should show the channel count of the file it
  stands for.
* Two processes racing on the same thumbnail both write identical bytes; the loser's copy (saved under a
  suffixed name by the storage) is deleted, so exactly one file remains.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from datasets.image_io import decode_stored_image
from datasets.models import Variant
from imaging.codecs import make_thumbnail

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 320
WEBP_QUALITY = 80
JPEG_QUALITY = 82
_SUFFIXES = {".webp": "image/webp", ".jpg": "image/jpeg"}


@dataclass(frozen=True)
class Thumbnail:
    name: str
    content_type: str


def _stem(file_name: str, sha256: str) -> str:
    path = PurePosixPath(file_name)
    return str(path.with_name(f"{path.stem}.thumb-{(sha256 or 'nohash')[:12]}"))


def variant_thumbnail_names(rows: Iterable[tuple[str, str]]) -> list[str]:
    """Every name a thumbnail of these ``(file name, sha256)`` variants may have (for deleting them)."""
    return [_stem(name, sha) + suffix for name, sha in rows if name for suffix in _SUFFIXES]


def _encode(variant: Variant) -> tuple[bytes, str]:
    decoded = decode_stored_image(variant.file)
    buffer = io.BytesIO()
    if decoded.is_grayscale:
        small = make_thumbnail(decoded.rgb[:, :, 0], THUMBNAIL_SIDE)
        Image.fromarray(small, mode="L").save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue(), ".jpg"
    small = make_thumbnail(decoded.rgb, THUMBNAIL_SIDE)
    Image.fromarray(small).save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
    return buffer.getvalue(), ".webp"


def variant_thumbnail_ensure(*, variant: Variant) -> Thumbnail:
    """The variant's stored thumbnail, made (longest side ``THUMBNAIL_SIDE``) on first use.

    Raises ImagingError when the variant's file cannot be decoded, OSError when storage fails.
    """
    stem = _stem(variant.file.name, variant.sha256)
    for suffix, content_type in _SUFFIXES.items():
        if default_storage.exists(stem + suffix):
            return Thumbnail(stem + suffix, content_type)
    data, suffix = _encode(variant)
    wanted = stem + suffix
    saved = default_storage.save(wanted, ContentFile(data))
    if saved != wanted:  # another process wrote the same bytes first: keep one copy
        default_storage.delete(saved)
    return Thumbnail(wanted, _SUFFIXES[suffix])


def thumbnail_read(*, thumbnail: Thumbnail) -> bytes:
    with default_storage.open(thumbnail.name, "rb") as handle:
        return handle.read()
