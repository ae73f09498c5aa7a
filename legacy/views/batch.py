"""The seed batch endpoints (``/sam/batch_process`` and its SSE twin ``batch_process_stream``): every file
becomes a legacy session through ``legacy.services.batch_image_process``; a bad file is an error entry, the
others go on.
"""

from __future__ import annotations

from functools import partial

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from rest_framework.request import Request
from rest_framework.response import Response

from imaging.codecs import b64encode
from imaging.edits import Edits
from imaging.errors import ImagingError
from legacy.http import SeedUploadView, as_bool, seed_error
from legacy.services import batch_check, batch_image_process
from legacy.streams import calls_stream, event_stream_response
from legacy.wire import parse_batch_edits, uploaded_files
from samsite.common.errors import ServiceError


def _batch_item(
    *, owner: AbstractBaseUser, upload: UploadedFile, mode: str, edits: Edits, export_mask: bool
) -> dict:
    filename = upload.name or "image"
    try:
        result = batch_image_process(
            owner=owner, file=upload, mode=mode, edits=edits, export_mask=export_mask
        )
    except (ServiceError, ImagingError) as exc:
        _status, body = seed_error(exc)
        return {"filename": filename, "error": body["detail"], "code": body["error"]}
    item = {
        "filename": filename,
        "image_id": result.session.id.hex,
        "variant_png": b64encode(result.variant_png),
        "mode": mode,
        "score": result.score,
    }
    if result.mask_png is not None:
        item["component_mask_png"] = b64encode(result.mask_png)
    return item


class _BatchView(SeedUploadView):
    def batch_calls(self) -> list:
        uploads = uploaded_files(self.request, "images", "images[]", "image")
        if not uploads:
            raise ServiceError("image file required", "send the images as multipart field 'images'")
        data = self.request.data
        mode = str(data.get("mode") or "full").strip()
        edits = parse_batch_edits(data.get("edits"))
        batch_check(mode=mode)
        export_mask = as_bool(data.get("export_mask"))
        return [
            partial(
                _batch_item,
                owner=self.request.user,
                upload=upload,
                mode=mode,
                edits=edits,
                export_mask=export_mask,
            )
            for upload in uploads
        ]


class BatchProcessView(_BatchView):
    """POST batch_process: every file processed with the global edits; one JSON answer."""

    def post(self, request: Request) -> Response:
        results = [call() for call in self.batch_calls()]
        return Response({"results": results, "count": len(results)})


class BatchProcessStreamView(_BatchView):
    """POST batch_process_stream: as batch_process, one SSE event per file as it is done, then ``[DONE]``."""

    def post(self, request: Request):
        return event_stream_response(calls_stream("batch", self.batch_calls()), user=request.user)
