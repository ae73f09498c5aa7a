"""Reading stored dataset files back into pixels (storage-agnostic: ``open()``, never ``.path``)."""

from __future__ import annotations

from django.core.files import File

from imaging.codecs import DecodedImage, decode_image


def read_file_bytes(file: File) -> bytes:
    with file.open("rb") as handle:
        return handle.read()


def decode_stored_image(file: File) -> DecodedImage:
    """Decode an image already accepted at upload (same pixel limit as uploads)."""
    # Imported here: the uploads package imports the models, which import this module.
    from datasets.services.uploads.limits import max_image_pixels

    return decode_image(read_file_bytes(file), max_pixels=max_image_pixels())


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
