"""Reading stored dataset files back into pixels (storage-agnostic: ``open()``, never ``.path``)."""

from __future__ import annotations

from django.conf import settings
from django.core.files import File

from imaging.codecs import DecodedImage, decode_image


def read_file_bytes(file: File) -> bytes:
    with file.open("rb") as handle:
        return handle.read()


def decode_stored_image(file: File) -> DecodedImage:
    """Decode an image already accepted at upload (same pixel limit as uploads)."""
    return decode_image(read_file_bytes(file), max_pixels=settings.MAX_IMAGE_MEGAPIXELS * 1_000_000)
