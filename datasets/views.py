"""Authenticated downloads of dataset files (media is never served publicly).

DRF views, so scripts can use token authentication and pages the session cookie; ownership goes through
``image_get_for_user`` (someone else's image is a 404, exactly like a missing one).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.views import APIView

from datasets.image_io import OPAQUE_CONTENT_TYPE, served_content_type
from datasets.jobs.downloads import file_chunks, harden_file_response, stream_response
from datasets.models import DatasetImage
from datasets.selectors import image_get_for_user
from samsite.common.api import LenientContentNegotiation
from samsite.common.fields import ErrorSerializer

# Files never change under an id (a new upload is a new image), so browsers may keep them a day.
FILE_CACHE_CONTROL = "private, max-age=86400"


def file_response(request, file, *, filename: str, content_type: str | None = None, download: bool = False):
    """Stream a stored file (storage-agnostic, never buffered under ASGI) with its display name and a
    private cache policy.

    The Content-Type is the caller's (a format the caller knows, e.g. ``image/png`` for thumbnails) or the
    decoded format's, read from the storage suffix that uploads take from the decoded format
    (``datasets.image_io.served_content_type``); never from a client's filename. A name without a known image
    suffix is sent as ``application/octet-stream`` attachment. Always ``nosniff`` and a sandboxing CSP.
    """
    if not file:
        raise Http404("file not found")
    content_type = content_type or served_content_type(file.name)
    if content_type is None:
        content_type, download = OPAQUE_CONTENT_TYPE, True
    response = stream_response(
        request,
        file_chunks(file.name),
        content_type=content_type,
        size=file.size,
        filename=filename,
        attachment=download,
    )
    harden_file_response(response)
    response["Cache-Control"] = FILE_CACHE_CONTROL
    return response


def served_filename(display_name: str, stored_name: str) -> str:
    """The name a file is sent under: the display name's stem with the *stored* suffix (taken from the
    decoded format at upload), never the client's own extension (``x.html`` holding a PNG is ``x.png``)."""
    suffix = PurePosixPath(stored_name).suffix.lower()
    stem = PurePosixPath(display_name or "").stem or PurePosixPath(stored_name).stem or "image"
    return f"{stem}{suffix}"


_DOWNLOAD_PARAM = OpenApiParameter(
    "download", OpenApiTypes.BOOL, OpenApiParameter.QUERY, description="Send as an attachment (save dialog)."
)
_ID_PARAM = OpenApiParameter(
    "image_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="Image id (hex)."
)


class _ImageFileView(APIView):
    content_negotiation_class = LenientContentNegotiation

    def _image(self, request, image_id: str) -> DatasetImage:
        return image_get_for_user(user=request.user, image_id=image_id)

    @staticmethod
    def _download(request) -> bool:
        return request.query_params.get("download", "").lower() in ("1", "true", "yes")


class ImageFileView(_ImageFileView):
    """The original uploaded file, byte for byte."""

    @extend_schema(
        operation_id="images_file_retrieve",
        parameters=[_ID_PARAM, _DOWNLOAD_PARAM],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The original file with its image content type."
            ),
            404: ErrorSerializer,
        },
        tags=["images"],
    )
    def get(self, request, image_id: str):
        image = self._image(request, image_id)
        response = file_response(
            request,
            image.file,
            filename=served_filename(image.filename, image.file.name),
            download=self._download(request),
        )
        response["ETag"] = f'"{image.sha256}"'
        return response


class ImageThumbnailView(_ImageFileView):
    """The PNG thumbnail (longest side 160 px)."""

    @extend_schema(
        operation_id="images_thumbnail_retrieve",
        parameters=[_ID_PARAM, _DOWNLOAD_PARAM],
        responses={(200, "image/png"): OpenApiTypes.BINARY, 404: ErrorSerializer},
        tags=["images"],
    )
    def get(self, request, image_id: str):
        image = self._image(request, image_id)
        stem = image.filename.rsplit(".", 1)[0]
        return file_response(
            request,
            image.thumbnail,
            filename=f"{stem}.thumbnail.png",
            content_type="image/png",
            download=self._download(request),
        )
