"""What an upload reads: a direct file or a ZIP entry, each behind a ``read()`` that is called once, in turn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from datasets.services.uploads.limits import max_upload_bytes, size_text


class FileRejected(Exception):
    """One file of an upload is refused (the others go on); ``error`` is ``"<code>: <detail>"``."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


@dataclass
class UploadSource:
    """One file to add: the name the client gave, the size it declared, and how to read its bytes."""

    original_name: str
    declared_size: int | None
    read: Callable[[], bytes]


class UploadTooLarge(FileRejected):
    """A file over MAX_UPLOAD_MB; ``error`` is ``"file_too_large: <size> exceeds the <n> MB limit"``."""


def file_too_large(size: int) -> UploadTooLarge:
    return UploadTooLarge(f"file_too_large: {size_text(size)} exceeds the {settings.MAX_UPLOAD_MB} MB limit")


def read_upload(upload: UploadedFile) -> bytes:
    """All of ``upload``'s bytes, read chunk by chunk; UploadTooLarge as soon as it is over MAX_UPLOAD_MB
    (a declared size over the limit refuses it before anything is read)."""
    limit = max_upload_bytes()
    if upload.size is not None and upload.size > limit:
        raise file_too_large(upload.size)
    chunks, total = [], 0
    for chunk in upload.chunks():
        total += len(chunk)
        if total > limit:
            raise file_too_large(total)
        chunks.append(chunk)
    return b"".join(chunks)


def uploaded_source(upload: UploadedFile) -> UploadSource:
    """A direct upload, read (by :func:`read_upload`) when its turn comes."""
    return UploadSource(
        original_name=str(upload.name or "upload"),
        declared_size=upload.size,
        read=partial(read_upload, upload),
    )
