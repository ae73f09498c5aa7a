"""The seed single-image flow (``/sam/init``, ``segment``, ``save_component``, ``components``, ``apply``):
the old request shapes parsed into ``legacy.services`` calls, the answers rendered in the old shapes. A legacy
``image_id`` is a LegacySession's hex id.
"""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from datasets.services.previews import mask_candidates_json
from imaging.codecs import b64encode, encode_image, encode_mask_png
from legacy.http import SeedUploadView, SeedView, as_bool
from legacy.services import component_save, legacy_apply, legacy_segment, legacy_session_create
from legacy.wire import component_json, parse_top_k, point_summary
from samsite.common.errors import ServiceError


class LegacyInitView(SeedUploadView):
    """POST init: multipart ``image`` -> a new session (``image_id``)."""

    def post(self, request: Request) -> Response:
        upload = request.FILES.get("image") or request.FILES.get("file")
        if upload is None:
            raise ServiceError("image file required", "send the image as multipart field 'image'")
        session = legacy_session_create(owner=request.user, file=upload)
        return Response(
            {
                "image_id": session.id.hex,
                "width": session.width,
                "height": session.height,
                "filename": session.filename,
            }
        )


class LegacySegmentView(SeedView):
    """POST segment: pixel points -> candidate masks, best first."""

    throttle_scope = "previews"

    def post(self, request: Request) -> Response:
        data = self.body()
        session = self.get_session(data.get("image_id"))
        accumulate = True if data.get("accumulate") is None else as_bool(data["accumulate"])
        result = legacy_segment(
            session=session,
            points=data.get("points"),
            accumulate=accumulate,
            top_k=parse_top_k(data.get("top_k")),
        )
        return Response(
            {
                "candidates": mask_candidates_json(result.candidates),
                "points": result.points,
                "image_id": session.id.hex,
                "point_summary": point_summary(result.points),
            }
        )


class LegacySaveComponentView(SeedView):
    """POST save_component: keep a mask as the image's next component (ids from 1)."""

    def post(self, request: Request) -> Response:
        data = self.body()
        session = self.get_session(data.get("image_id"))
        component = component_save(
            session=session, mask_png=data.get("mask_png"), score=data.get("score"), name=data.get("name")
        )
        return Response({"component": component_json(component), "image_id": session.id.hex})


class LegacyComponentsView(SeedView):
    """GET components?image_id=...: the image's saved components in id order."""

    def get(self, request: Request) -> Response:
        session = self.get_session(self.request.query_params.get("image_id"))
        components = session.components.order_by("number")
        return Response({"components": [component_json(c) for c in components], "image_id": session.id.hex})


class LegacyApplyView(SeedView):
    """POST apply: edits in list order, each inside its component."""

    def post(self, request: Request) -> Response:
        data = self.body()
        session = self.get_session(data.get("image_id"))
        result = legacy_apply(
            session=session, edits=data.get("edits"), export_mask=as_bool(data.get("export_mask"))
        )
        body = {"image_id": session.id.hex, "variant_png": b64encode(encode_image(result.rgb, "png"))}
        if result.mask is not None:
            body["component_mask_png"] = b64encode(encode_mask_png(result.mask))
        return Response(body)
