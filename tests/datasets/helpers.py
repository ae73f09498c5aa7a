"""Helpers of the dataset API tests: image encoders, ZIP builders, upload requests, storage listing."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image


def image_bytes(array: np.ndarray, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **params)
    return buffer.getvalue()


def make_zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def upload_file(name: str, data: bytes, content_type: str = "application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def images_url(dataset) -> str:
    return f"/api/datasets/{dataset.id.hex}/images/"


def post_upload(api, dataset, files: list[tuple[str, bytes]] = (), zip_data: bytes | None = None, **extra):
    """POST a multipart upload: ``files`` as repeated ``images`` parts, ``zip_data`` as the ``zip`` part."""
    payload: dict = {}
    if files:
        payload["images"] = [upload_file(name, data) for name, data in files]
    if zip_data is not None:
        payload["zip"] = upload_file("archive.zip", zip_data, "application/zip")
    payload.update(extra)
    return api.post(images_url(dataset), payload, format="multipart")


def stored_files(settings) -> list[str]:
    """Every file under MEDIA_ROOT, relative, sorted."""
    root = settings.MEDIA_ROOT
    if not root.exists():
        return []
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
