"""The seed dataset flow (``/sam/dataset/...``), as thin adapters over the shared services.

Uploads (``images_upload``), templates (``template_create``), previews and prewarm
(``datasets.services.previews``) and generation (``job_create`` + the runner) are the same code the REST API
and the pages call; these views only translate the old request and response shapes (``legacy.wire``). The
old ids are our records' hex ids (dataset, image, template).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import numpy as np
from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response

from datasets.image_io import read_file_bytes
from datasets.jobs.events import stream_slot_release
from datasets.jobs.services import job_create
from datasets.jobs.snapshots import spec_for_template
from datasets.models import Dataset, JobSource, image_class_from_input
from datasets.prompts import points_from_input
from datasets.segmentation import app_segmenter, app_segmenter_status
from datasets.selection import templates_from_input
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
from imaging.errors import EditValidationError
from imaging.pipeline import output_pixels
from legacy.http import SeedUploadView, SeedView, as_bool, seed_error
from legacy.streams import (
    Rendition,
    event_stream_response,
    iterator_stream,
    job_relay,
    stream_slot_or_refusal,
)
from legacy.wire import (
    MESSAGE_AS_CODE,
    image_event,
    message_error,
    parse_format,
    template_json,
    uploaded_files,
)
from samsite.common.errors import ServiceError
from templates_app.models import Template
from templates_app.selectors import template_list_for_dataset
from templates_app.services import template_create


class DatasetInitView(SeedUploadView):
    """POST dataset/init: a new dataset from ``images`` / ``images[]`` files and/or one ``zip``."""

    def post(self, request: Request) -> Response:
        files = uploaded_files(request, "images", "images[]")
        archive = request.FILES.get("zip")
        if not files and archive is None:
            raise message_error(ServiceError("no_files", "provide images[] or zip"))
        name = PurePath(archive.name).stem[:200] if archive is not None and archive.name else ""
        dataset = dataset_create(
            owner=request.user, name=name or f"Dataset {datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
        )
        try:
            result = images_upload(dataset=dataset, files=files, archive=archive)
        except ServiceError as exc:
            dataset_delete(dataset=dataset)  # nothing left behind
            if exc.code in MESSAGE_AS_CODE:
                raise message_error(exc) from exc
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
            image_class=image_class_from_input(
                data.get("class", data.get("image_class")), field="class", also_blank=("all",)
            ),
            reference_image=reference,
        )
        body = template_json(template)
        # box and mask_choice echo the optional fields of this save only: the seed's listing keeps its shape.
        return Response(
            {**body, "count": template.points_count, "box": template.box, "mask_choice": template.mask_choice}
        )


class TemplateListView(SeedView):
    """GET dataset/templates?dataset_id=...: the dataset's templates in save order."""

    def get(self, request: Request) -> Response:
        dataset = self.get_dataset(self.request.query_params.get("dataset_id"))
        return Response({"templates": [template_json(t) for t in template_list_for_dataset(dataset=dataset)]})


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
    dataset: Dataset, data: Mapping[str, Any]
) -> list[tuple[Template, Mapping | None]] | None:
    """The templates a request names with their edits (``datasets.selection``'s shapes, the seed API's codes);
    None when it names none. A template listed twice counts once, the later edits winning."""

    def not_found(template_id: object, index: int | None) -> ServiceError:
        return ServiceError(
            "template_not_found", "template not found", status=404, template_id=str(template_id)
        )

    selection = templates_from_input(
        dataset,
        data.get("templates"),
        data.get("edits"),
        invalid_code="invalid_templates",
        not_found=not_found,
        merge_duplicates=True,
    )
    return selection or None


class TemplatePreviewView(SeedView):
    """POST dataset/template/preview: the stacked variant of the given templates on one image."""

    throttle_scope = "previews"

    def post(self, request: Request) -> Response:
        data = self.body()
        dataset = self.get_dataset(data.get("dataset_id"))
        selection = _template_selection(dataset, data)
        if selection is None:
            selection = [(t, None) for t in template_list_for_dataset(dataset=dataset)]
        if data.get("image_id"):
            image = self.get_image(data["image_id"], dataset=dataset)
        else:
            image_class = image_class_from_input(
                data.get("class_filter"), field="class_filter", also_blank=("all",)
            )
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
        rgb = output_pixels(
            result.rgb if result is not None else working_image(image).rgb, image.is_grayscale
        )
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
                **image_event(progress.index, progress.total, progress.image),
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
        return event_stream_response(stream, user=request.user)


class ApplyStreamView(SeedView):
    """POST dataset/apply_stream: run the templates over the dataset as a persisted job and relay it (SSE).

    Pre-stream errors are plain JSON; then one event per image, ``{"done": true, ...}`` and ``[DONE]``.
    """

    throttle_scope = "jobs"

    def post(self, request: Request):
        data = self.body()
        dataset = self.get_dataset(self.param("dataset_id"))
        selection = _template_selection(dataset, data)
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
        output_format = parse_format(requested)
        rendition = Rendition(
            fmt=output_format if requested not in (None, "") else settings.SEED_OUTPUT_FORMAT,
            quality=settings.SEED_OUTPUT_QUALITY,
            max_side=settings.SEED_MAX_SIDE,
        )
        # The stream slot first: a user at SSE_MAX_CONNECTIONS_PER_USER gets a 429 and no job.
        refusal = stream_slot_or_refusal(request.user)
        if refusal is not None:
            return refusal
        try:
            job = job_create(
                dataset=dataset,
                owner=request.user,
                templates=selection,
                output_format=output_format,
                export_mask=as_bool(data.get("export_mask")),
                source=JobSource.SEED,
                strict_edits=False,
            )
        except BaseException:
            stream_slot_release(request.user)
            raise
        response = event_stream_response(
            job_relay(job.id, rendition=rendition), user=request.user, slot_held=True
        )
        response["X-Job-Id"] = job.id.hex
        return response
