"""The seed-compatible endpoints (``shared/design/SEED_API.md``), as thin adapters over the shared services.

Dataset workflow: uploads (``images_upload``), templates (``template_create``), previews and prewarm
(``datasets.services.previews``) and generation (``job_create`` + the runner) are the same code the REST API
and the pages call; these views only translate the old request and response shapes. The old ids are our
records' hex ids (dataset, image, template; a legacy ``image_id`` is a LegacySession).

Legacy single-image and batch endpoints: ``legacy.services``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import PurePath
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from rest_framework.request import Request
from rest_framework.response import Response

from datasets.image_io import read_file_bytes
from datasets.jobs.services import job_create
from datasets.jobs.snapshots import spec_for_template
from datasets.models import Dataset, ImageClass, JobSource, OutputFormat
from datasets.prompts import check_templates_per_preview, points_from_input
from datasets.segmentation import app_segmenter, app_segmenter_status
from datasets.selectors import image_list_for_dataset
from datasets.services.datasets import dataset_create, dataset_delete
from datasets.services.previews import (
    PrewarmProgress,
    edit_preview,
    embeddings_prewarm,
    segment_preview,
    segmenter_errors,
    working_image,
)
from datasets.services.uploads import images_upload
from imaging.codecs import b64encode, encode_image, encode_mask_png
from imaging.edits import EDIT_FIELDS, Edits
from imaging.errors import EditValidationError, ImagingError
from legacy.http import SeedUploadView, SeedView, as_bool, seed_error
from legacy.models import Component
from legacy.services import (
    batch_check,
    batch_image_process,
    component_save,
    legacy_apply,
    legacy_segment,
    legacy_session_create,
    parse_top_k,
)
from legacy.streams import Rendition, calls_stream, event_stream_response, iterator_stream, job_relay
from samsite.errors import ServiceError
from samsite.parsers import loads_limited
from templates_app.models import Template
from templates_app.selectors import template_list_for_dataset
from templates_app.services import template_create

#: Upload errors whose old wire form is the message itself (``{"error": "max_images_exceeded:12/10"}``).
_MESSAGE_AS_CODE = frozenset({"no_files", "max_images_exceeded", "zip_error"})
_FORMATS = {
    "png": OutputFormat.PNG,
    "jpeg": OutputFormat.JPEG,
    "jpg": OutputFormat.JPEG,
    "webp": OutputFormat.WEBP,
}


# --- shared request parsing ------------------------------------------------------------------------------


def _files(request: Request, *names: str) -> list[UploadedFile]:
    return [upload for name in names for upload in request.FILES.getlist(name)]


def _parse_format(value: Any) -> str:
    if value in (None, ""):
        return OutputFormat.PNG
    fmt = _FORMATS.get(str(value).strip().lower())
    if fmt is None:
        raise ServiceError("invalid_format", "format must be one of png, jpeg, webp", field="format")
    return fmt


def _parse_class(value: Any, field: str) -> str:
    cleaned = "" if value in (None, "none", "all") else value
    if cleaned not in ImageClass.values:
        raise ServiceError("invalid_class", f"{field} must be one of '', 'pass', 'fail'", field=field)
    return cleaned


def _message_error(exc: ServiceError) -> ServiceError:
    """The old tool's wire form of an upload error: the message is the ``error`` (the code stays as ``code``)."""
    error = ServiceError(exc.message, exc.message, status=exc.status, **exc.extra)
    error.extra["code"] = exc.code
    return error


def _template_json(template: Template) -> dict:
    return {
        "id": template.id.hex,
        "template_id": template.id.hex,
        "name": template.name,
        "class": template.image_class,
        "points_count": template.points_count,
        "points": template.points,
        "image_id": template.reference_image_id.hex if template.reference_image_id else None,
    }


# --- dataset workflow ------------------------------------------------------------------------------------


class DatasetInitView(SeedUploadView):
    """POST dataset/init: a new dataset from ``images`` / ``images[]`` files and/or one ``zip``."""

    def post(self, request: Request) -> Response:
        files = _files(request, "images", "images[]")
        archive = request.FILES.get("zip")
        if not files and archive is None:
            raise _message_error(ServiceError("no_files", "provide images[] or zip"))
        name = PurePath(archive.name).stem[:200] if archive is not None and archive.name else ""
        dataset = dataset_create(
            owner=request.user, name=name or f"Dataset {datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
        )
        try:
            result = images_upload(dataset=dataset, files=files, archive=archive)
        except ServiceError as exc:
            dataset_delete(dataset=dataset)  # nothing left behind
            if exc.code in _MESSAGE_AS_CODE:
                raise _message_error(exc) from exc
            raise
        rejected = [{"filename": r.filename, "error": r.error} for r in result.rejected]
        if not result.created:
            dataset_delete(dataset=dataset)
            raise ServiceError("no_valid_images", "none of the files is a usable image", rejected=rejected)
        images = [
            {
                "id": image.id.hex,
                "filename": image.filename,
                "width": image.width,
                "height": image.height,
                "class": image.image_class,
                "thumb_b64": b64encode(read_file_bytes(image.thumbnail)),
            }
            for image in result.created
        ]
        return Response(
            {
                "dataset_id": dataset.id.hex,
                "name": dataset.name,
                "count": len(images),
                "images": images,
                "rejected": rejected,
            }
        )


class TemplateSaveView(SeedView):
    """POST dataset/template/save: normalised points, optional name, class and reference image; optional
    (additions to the seed's fields) ``box`` ``[x0, y0, x1, y1]`` in [0, 1] (then points may be empty) and
    ``mask_choice`` ("best" or 0..2)."""

    def post(self, request: Request) -> Response:
        data = self.body()
        dataset = self.get_dataset(data.get("dataset_id"))
        reference = None
        if data.get("image_id"):
            reference = self.get_image(data["image_id"], dataset=dataset)
        elif isinstance(data.get("image_filename"), str):
            # The old clients name the reference image; an unknown name only loses the (optional) reference.
            images = image_list_for_dataset(dataset=dataset)
            filename = data["image_filename"]
            reference = (
                images.filter(filename=filename).first() or images.filter(original_filename=filename).first()
            )
        name = data.get("name")
        template = template_create(
            dataset=dataset,
            points=data.get("points"),
            box=data.get("box"),
            mask_choice=data.get("mask_choice", "best"),
            name="" if name is None else name,
            image_class=_parse_class(data.get("class", data.get("image_class")), "class"),
            reference_image=reference,
        )
        body = _template_json(template)
        # box and mask_choice echo the optional fields of this save only: the seed's listing keeps its shape.
        return Response(
            {**body, "count": template.points_count, "box": template.box, "mask_choice": template.mask_choice}
        )


class TemplateListView(SeedView):
    """GET dataset/templates?dataset_id=...: the dataset's templates in save order."""

    def get(self, request: Request) -> Response:
        dataset = self.get_dataset(self.request.query_params.get("dataset_id"))
        return Response(
            {"templates": [_template_json(t) for t in template_list_for_dataset(dataset=dataset)]}
        )


class PointPreviewView(SeedView):
    """POST dataset/point_preview: the best mask for normalised points on one image."""

    throttle_scope = "previews"

    def post(self, request: Request) -> Response:
        data = self.body()
        dataset = self.get_dataset(data.get("dataset_id"))
        image = self.get_image(data.get("image_id"), dataset=dataset)
        preview = segment_preview(image=image, points=points_from_input(data.get("points")))
        body: dict[str, Any] = {"width": preview.width, "height": preview.height, "cached": preview.cached}
        if preview.candidates:
            best = preview.candidates[0]
            mask = best.mask
            body |= {"score": float(best.score), "area": best.area, "bbox": best.bbox}
        else:
            mask = np.zeros((preview.height, preview.width), dtype=bool)
            body |= {"score": 0.0, "area": 0, "bbox": None}
        body["mask_png"] = b64encode(encode_mask_png(mask))
        return Response(body)


def _template_selection(
    view: SeedView, dataset: Dataset, data: Mapping[str, Any]
) -> list[tuple[Template, Mapping | None]] | None:
    """The templates a request names with their edits, from either body shape; None when it names none.

    ``templates: [{template_id, edits}]`` and/or ``edits: {template_id: {...}}``. An entry without edits (or
    with ``null``) runs with the template's saved default edits; given edits replace them, a missing key
    meaning "no change". A flat ``edits`` object (keys are edit fields, not ids) applies to every template.
    """
    chosen: dict[Any, tuple[Template, Mapping | None]] = {}
    listed = data.get("templates")
    if listed not in (None, ""):
        if not isinstance(listed, list):
            raise ServiceError("invalid_templates", "templates must be a list", field="templates")
        check_templates_per_preview(len(listed))
        for index, entry in enumerate(listed):
            if isinstance(entry, str):
                template_id, edits = entry, None
            elif isinstance(entry, Mapping):
                template_id, edits = entry.get("template_id") or entry.get("id"), entry.get("edits")
            else:
                raise ServiceError("invalid_templates", "a template entry must be an object", index=index)
            if not template_id:
                raise ServiceError("invalid_templates", "template_id is required", index=index)
            template = view.get_template(template_id, dataset=dataset)
            chosen[template.pk] = (template, edits)
    edits_map = data.get("edits")
    if edits_map not in (None, ""):
        if not isinstance(edits_map, Mapping):
            raise ServiceError("invalid_edits", "edits must be an object keyed by template_id", field="edits")
        check_templates_per_preview(len(edits_map))
        if edits_map and all(key in EDIT_FIELDS for key in edits_map):
            targets = [t for t, _ in chosen.values()] or list(template_list_for_dataset(dataset=dataset))
            return [(template, edits_map) for template in targets]
        for template_id, edits in edits_map.items():
            template = view.get_template(template_id, dataset=dataset)
            if template.pk not in chosen or chosen[template.pk][1] is None:
                chosen[template.pk] = (template, edits)
    return list(chosen.values()) or None


class TemplatePreviewView(SeedView):
    """POST dataset/template/preview: the stacked variant of the given templates on one image."""

    throttle_scope = "previews"

    def post(self, request: Request) -> Response:
        data = self.body()
        dataset = self.get_dataset(data.get("dataset_id"))
        selection = _template_selection(self, dataset, data)
        if selection is None:
            selection = [(t, None) for t in template_list_for_dataset(dataset=dataset)]
        if data.get("image_id"):
            image = self.get_image(data["image_id"], dataset=dataset)
        else:
            image_class = _parse_class(data.get("class_filter"), "class_filter")
            images = image_list_for_dataset(dataset=dataset)
            image = (images.filter(image_class=image_class) if image_class else images).first()
            if image is None:
                raise ServiceError("image_not_found", "no image matches the class filter", status=404)
        specs = []
        for template, edits in sorted(selection, key=lambda pair: pair[0].position):
            try:
                specs.append(spec_for_template(template, edits, strict=False))
            except EditValidationError as exc:  # the same answer as apply_stream's job_create
                raise ServiceError(
                    "invalid_edits", str(exc), field=exc.field, template_id=template.id.hex
                ) from exc
        result = edit_preview(image=image, specs=specs)
        rgb = result.rgb if result is not None else working_image(image).rgb
        return Response(
            {
                "variant_png": b64encode(encode_image(rgb, "png")),
                "filename": image.filename,
                "image_id": image.id.hex,
                "template_names": list(result.template_names) if result is not None else [],
            }
        )


class PrecomputeView(SeedView):
    """POST dataset/precompute: compute and cache every image's embedding, answer when done."""

    throttle_scope = "uploads"

    def post(self, request: Request) -> Response:
        dataset = self.get_dataset(self.param("dataset_id"))
        added = errors = 0
        total = 0
        for progress in embeddings_prewarm(images=image_list_for_dataset(dataset=dataset)):
            total += 1
            added += progress.computed
            errors += bool(progress.error)
        # Never the global cache count: it would tell a user how much others uploaded. Per user instead: the
        # dataset's images whose embedding is now ready (all but the failed ones with a caching backend).
        ready = total - errors if app_segmenter(dataset).cacheable else 0
        return Response(
            {
                "cached_added": added,
                "total_cache": ready,
                "total": total,
                "errors": errors,
            }
        )


class PrewarmView(SeedView):
    """POST dataset/prewarm: as precompute, streamed: one SSE event per image, then ``{"done": true}``."""

    throttle_scope = "uploads"

    def post(self, request: Request):
        dataset = self.get_dataset(self.param("dataset_id"))
        with segmenter_errors():  # a missing model is a plain 503 before the stream starts
            app_segmenter(dataset)
        counts = {"total": 0, "computed": 0, "skipped": 0, "errors": 0}

        def to_event(progress: PrewarmProgress) -> dict:
            counts["total"] = progress.total
            event: dict[str, Any] = {
                "index": progress.index,
                "total": progress.total,
                "filename": progress.image.filename,
                "image_id": progress.image.id.hex,
                "ms": progress.ms,
            }
            if progress.error:
                counts["errors"] += 1
                event["error"] = progress.error
            elif progress.computed:
                counts["computed"] += 1
                event["computed"] = True
            else:
                counts["skipped"] += 1
                event["skipped"] = True
            return event

        def on_error(exc: Exception) -> dict:
            _status, body = seed_error(exc)
            counts["errors"] += 1
            return {"error": body["error"], "detail": body["detail"]}

        stream = iterator_stream(
            f"prewarm {dataset.id.hex}",
            lambda: embeddings_prewarm(images=list(image_list_for_dataset(dataset=dataset))),
            to_event,
            lambda: {"done": True, **counts},
            on_error,
        )
        return event_stream_response(stream)


class ApplyStreamView(SeedView):
    """POST dataset/apply_stream: run the templates over the dataset as a persisted job and relay it (SSE).

    Pre-stream errors are plain JSON; then one event per image, ``{"done": true, ...}`` and ``[DONE]``.
    """

    throttle_scope = "jobs"

    def post(self, request: Request):
        data = self.body()
        dataset = self.get_dataset(self.param("dataset_id"))
        selection = _template_selection(self, dataset, data)
        if selection is None and not dataset.templates.exists():
            raise ServiceError("no_templates", "the dataset has no templates; save one first")
        segmenter = app_segmenter_status()  # read without loading: the runner may live in another process
        if segmenter["backend"] == "sam" and segmenter["checkpoint"] is None:
            raise ServiceError(
                "sam_model_not_loaded", "SAM_BACKEND=sam but no checkpoint was found", status=503
            )
        # The stored job keeps full-size outputs in the requested format (PNG by default); the stream
        # carries the seed rendition: the request's format, else SEED_OUTPUT_FORMAT, at most SEED_MAX_SIDE.
        requested = data.get("format")
        output_format = _parse_format(requested)
        rendition = Rendition(
            fmt=output_format if requested not in (None, "") else settings.SEED_OUTPUT_FORMAT,
            quality=settings.SEED_OUTPUT_QUALITY,
            max_side=settings.SEED_MAX_SIDE,
        )
        job = job_create(
            dataset=dataset,
            owner=request.user,
            templates=selection,
            output_format=output_format,
            export_mask=as_bool(data.get("export_mask")),
            source=JobSource.SEED,
            strict_edits=False,
        )
        response = event_stream_response(job_relay(job.id, rendition=rendition))
        response["X-Job-Id"] = job.id.hex
        return response


# --- legacy single-image flow ----------------------------------------------------------------------------


def _component_json(component: Component) -> dict:
    return {
        "id": component.number,
        "bbox": component.bbox or None,
        "area": component.area,
        "score": component.score,
        "name": component.name,
    }


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
        candidates = [
            {
                "rank": rank,
                "score": float(candidate.score),
                "area": candidate.area,
                "bbox": list(candidate.bbox) if candidate.bbox else None,
                "mask_png": b64encode(encode_mask_png(candidate.mask)),
            }
            for rank, candidate in enumerate(result.candidates, start=1)
        ]
        positive = sum(1 for point in result.points if point["positive"])
        return Response(
            {
                "candidates": candidates,
                "points": result.points,
                "image_id": session.id.hex,
                "point_summary": {
                    "total": len(result.points),
                    "positive": positive,
                    "negative": len(result.points) - positive,
                },
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
        return Response({"component": _component_json(component), "image_id": session.id.hex})


class LegacyComponentsView(SeedView):
    """GET components?image_id=...: the image's saved components in id order."""

    def get(self, request: Request) -> Response:
        session = self.get_session(self.request.query_params.get("image_id"))
        components = session.components.order_by("number")
        return Response({"components": [_component_json(c) for c in components], "image_id": session.id.hex})


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


# --- legacy batch ----------------------------------------------------------------------------------------


def _batch_edits(value: Any) -> Edits:
    if value in (None, ""):
        return Edits()
    if isinstance(value, str):
        try:
            value = loads_limited(value)
        except ValueError:
            raise ServiceError("invalid edits JSON", "edits must be a JSON object string") from None
    if value is None:
        return Edits()
    if not isinstance(value, Mapping):
        raise ServiceError("invalid edits JSON", "edits must be a JSON object")
    return Edits.from_dict(value, strict=False)


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
        uploads = _files(self.request, "images", "images[]", "image")
        if not uploads:
            raise ServiceError("image file required", "send the images as multipart field 'images'")
        data = self.request.data
        mode = str(data.get("mode") or "full").strip()
        edits = _batch_edits(data.get("edits"))
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
        return event_stream_response(calls_stream("batch", self.batch_calls()))
