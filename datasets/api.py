"""REST API of datasets and images: upload, list, class, delete, segment preview, edit preview, prewarm.

Thin views: parse the request, resolve ids through the ownership accessors (someone else's object is a
404), call one service, render. The services raise ServiceError for refused input, rendered by
``samsite.common.api.exception_handler`` as ``{"error": code, "detail": message, ...}`` (field/index when known).
"""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.db import transaction
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets.jobs.snapshots import spec_for_template
from datasets.models import Dataset, DatasetImage
from datasets.prompts import box_from_input, check_id_list, check_templates_per_preview, points_from_input
from datasets.segmentation import app_segmenter_status, available_models, site_checkpoint_name
from datasets.selection import templates_from_input
from datasets.selectors import (
    dataset_get_for_user,
    dataset_list_for_user,
    image_get_for_user,
    image_list_for_dataset,
)
from datasets.serializers import (
    DatasetSerializer,
    DatasetWriteSerializer,
    EditPreviewRequestSerializer,
    EditPreviewResponseSerializer,
    ImageClassSerializer,
    ImageSerializer,
    ImageUploadSerializer,
    ModelSerializer,
    PrewarmRequestSerializer,
    PrewarmResponseSerializer,
    SegmentRequestSerializer,
    SegmentResponseSerializer,
    UploadResultSerializer,
)
from datasets.services.datasets import dataset_create, dataset_delete, dataset_rename, dataset_set_checkpoint
from datasets.services.images import image_delete, image_set_class
from datasets.services.previews import (
    edit_preview,
    embeddings_prewarm,
    mask_candidates_json,
    segment_preview,
    working_image,
)
from datasets.services.uploads import images_upload
from imaging.codecs import b64encode, encode_image
from imaging.pipeline import TemplateSpec
from samsite.common.api import LenientContentNegotiation
from samsite.common.errors import ServiceError
from samsite.common.fields import ErrorSerializer
from samsite.common.throttles import PREVIEWS, UPLOADS, ActionScopedRateThrottle

ERRORS = {400: ErrorSerializer, 404: ErrorSerializer}


def _writes(request) -> bool:
    """A request (or the browsable API's cloned one, for its forms) that sends input."""
    return request is not None and request.method in ("POST", "PUT", "PATCH")


def _rendered(serializer_class, instance, request, **kwargs):
    return serializer_class(instance, context={"request": request}, **kwargs).data


@extend_schema(tags=["datasets"])
@extend_schema_view(
    list=extend_schema(summary="Your datasets, newest first, with image/template/job counts."),
    create=extend_schema(
        request=DatasetWriteSerializer, responses={201: DatasetSerializer, 400: ErrorSerializer}
    ),
    retrieve=extend_schema(responses={200: DatasetSerializer, 404: ErrorSerializer}),
    update=extend_schema(request=DatasetWriteSerializer, responses={200: DatasetSerializer, **ERRORS}),
    partial_update=extend_schema(
        summary="Rename, or pick its model (`checkpoint`; 400 `invalid_checkpoint` with the `choices`).",
        request=DatasetWriteSerializer,
        responses={200: DatasetSerializer, **ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete the dataset with its images, templates, jobs and all their files.",
        responses={204: None, 404: ErrorSerializer},
    ),
)
class DatasetViewSet(viewsets.GenericViewSet):
    """Datasets of the signed-in user."""

    lookup_url_kwarg = "dataset_id"
    serializer_class = DatasetSerializer
    queryset = Dataset.objects.none()  # for the schema; every read goes through the selectors
    throttle_classes = [ActionScopedRateThrottle]
    throttle_scopes = {"upload_images": UPLOADS, "prewarm": UPLOADS, "preview": PREVIEWS}

    def get_queryset(self):
        return dataset_list_for_user(user=self.request.user)

    def get_serializer_class(self):
        # What the browsable API's POST/PUT/PATCH forms render: the input each action reads (responses are
        # rendered with DatasetSerializer explicitly, and the schema names its request serializers).
        if _writes(self.request):
            if self.action in ("list", "create", "retrieve", "update", "partial_update"):
                return DatasetWriteSerializer
            if self.action in ("images", "upload_images"):
                return ImageUploadSerializer
        return super().get_serializer_class()

    def get_object(self) -> Dataset:
        return dataset_get_for_user(user=self.request.user, dataset_id=self.kwargs["dataset_id"])

    def _detail(self, dataset: Dataset) -> dict:
        annotated = self.get_queryset().get(pk=dataset.pk)
        return _rendered(DatasetSerializer, annotated, self.request)

    # --- datasets ---------------------------------------------------------------------------------------

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(_rendered(DatasetSerializer, page, request, many=True))

    def create(self, request):
        data = _valid(DatasetWriteSerializer, request.data)
        with transaction.atomic():  # a refused checkpoint leaves no dataset behind
            dataset = dataset_create(owner=request.user, name=data["name"])
            if data.get("checkpoint"):
                dataset_set_checkpoint(dataset=dataset, checkpoint=data["checkpoint"])
        return Response(self._detail(dataset), status=status.HTTP_201_CREATED)

    def retrieve(self, request, dataset_id=None):
        return Response(self._detail(self.get_object()))

    def update(self, request, dataset_id=None, partial=False):
        dataset = self.get_object()
        serializer = DatasetWriteSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        with transaction.atomic():
            if "checkpoint" in data:
                dataset_set_checkpoint(dataset=dataset, checkpoint=data["checkpoint"])
            if "name" in data:
                dataset_rename(dataset=dataset, name=data["name"])
        return Response(self._detail(dataset))

    def partial_update(self, request, dataset_id=None):
        return self.update(request, dataset_id, partial=True)

    def destroy(self, request, dataset_id=None):
        dataset_delete(dataset=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- images -----------------------------------------------------------------------------------------

    @extend_schema(
        summary="The dataset's images in upload order (paginated), with authenticated file URLs.",
        responses={200: ImageSerializer(many=True), 404: ErrorSerializer},
    )
    @action(detail=True, methods=["get"], url_name="images", parser_classes=[MultiPartParser, FormParser])
    def images(self, request, dataset_id=None):
        dataset = self.get_object()
        page = self.paginate_queryset(image_list_for_dataset(dataset=dataset))
        return self.get_paginated_response(_rendered(ImageSerializer, page, request, many=True))

    @extend_schema(
        summary="Upload images (repeated `images` parts) and/or one `zip`.",
        description=(
            "Each undecodable, oversize (MAX_UPLOAD_MB) or duplicate file is listed in `rejected` while the "
            "good ones are stored (201; 200 when nothing was stored). Errors (400): `no_files` "
            '("provide images[] or zip"), `max_images_exceeded` ("max_images_exceeded:<n>/<max>", n counting '
            'the dataset\'s images plus every submitted file), `zip_error` ("zip_error:<reason>": bad_archive, '
            "no_images, too_many_entries, too_large, compression_ratio, size_mismatch, corrupt_entry, "
            "encrypted, unsupported_compression; nothing is stored), `too_many_archives`, `too_many_files`."
        ),
        request={"multipart/form-data": ImageUploadSerializer},
        responses={201: UploadResultSerializer, 200: UploadResultSerializer, **ERRORS},
    )
    @images.mapping.post
    def upload_images(self, request, dataset_id=None):
        dataset = self.get_object()
        try:
            files = request.FILES.getlist("images") + request.FILES.getlist("images[]")
            archives = request.FILES.getlist("zip")
        except TooManyFilesSent:
            raise ServiceError("too_many_files", "too many files in one request", field="images") from None
        except RequestDataTooBig:
            raise ServiceError("request_too_large", "the request's form fields are too large") from None
        if len(archives) > 1:
            raise ServiceError("too_many_archives", "send one zip per request", field="zip")
        result = images_upload(dataset=dataset, files=files, archive=archives[0] if archives else None)
        outcome = {
            "count": len(result.created),
            "created": result.created,
            "rejected": result.rejected,
            "dataset": self.get_queryset().get(pk=dataset.pk),  # annotated with its counts
        }
        return Response(
            _rendered(UploadResultSerializer, outcome, request),
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )

    # --- previews ---------------------------------------------------------------------------------------

    @extend_schema(
        summary="Preview the edited variant of one image before a run (JSON with base64, or the PNG itself).",
        description=(
            "`templates` lists `{id, edits?}` (default: every template with its default edits); they stack "
            'in save order. Send `"output": "image"` or `?as=image` to get `image/png` back. When no template '
            "applies to the image (class filter), `applied` is false and the original is returned. Errors: "
            "`invalid_template` / `invalid_edits` (with `index`, and `field` for edits), `no_templates`, "
            "`no_images`, `invalid_compose`, 503 `sam_model_not_loaded`."
        ),
        parameters=[
            OpenApiParameter(
                "as", OpenApiTypes.STR, OpenApiParameter.QUERY, enum=["json", "image"], required=False
            )
        ],
        request=EditPreviewRequestSerializer,
        responses={
            (200, "application/json"): EditPreviewResponseSerializer,
            (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="The variant as PNG."),
            **ERRORS,
            503: ErrorSerializer,
        },
    )
    @action(detail=True, methods=["post"], content_negotiation_class=LenientContentNegotiation)
    def preview(self, request, dataset_id=None):
        dataset = self.get_object()
        data = _valid(EditPreviewRequestSerializer, request.data)
        image = self._preview_image(dataset, data.get("image_id"))
        specs = self._preview_specs(dataset, data.get("templates"))
        result = edit_preview(image=image, specs=specs, compose=data["compose"])
        if result is None:
            decoded = working_image(image)  # the size an edited preview would have
            png, applied, ids, names, score, area = encode_image(decoded.rgb, "png"), False, [], [], 0.0, 0
            height, width = decoded.rgb.shape[:2]
        else:
            png, applied = encode_image(result.rgb, "png"), True
            ids, names = list(result.template_ids), list(result.template_names)
            score, area = float(result.score), int(result.area)
            height, width = result.rgb.shape[:2]
        if "image" in (data["output"], request.query_params.get("as")):
            response = HttpResponse(png, content_type="image/png")
            response["X-Variant-Applied"] = "true" if applied else "false"
            return response
        variant = {
            "image_id": image.id.hex,
            "filename": image.filename,
            "applied": applied,
            "template_ids": ids,
            "template_names": names,
            "width": width,
            "height": height,
            "score": score,
            "area": area,
            "variant_png": b64encode(png),
        }
        return Response(EditPreviewResponseSerializer(variant).data)

    def _preview_image(self, dataset: Dataset, image_id: str | None) -> DatasetImage:
        if image_id:
            return image_get_for_user(user=self.request.user, image_id=image_id, dataset=dataset)
        first = image_list_for_dataset(dataset=dataset).first()
        if first is None:
            raise ServiceError("no_images", "the dataset has no images yet", field="image_id")
        return first

    def _preview_specs(self, dataset: Dataset, items: object) -> list[TemplateSpec]:
        if items is None:
            # Every template of the dataset: the same MAX_TEMPLATES_PER_PREVIEW as a listed selection.
            check_templates_per_preview(dataset.templates.count())
            selection = [(template, None) for template in dataset.templates.order_by("position")]
        else:
            selection = templates_from_input(dataset, items, validate_edits=True)
        if not selection:
            raise ServiceError("no_templates", "the dataset has no templates to preview", field="templates")
        return [spec_for_template(template, edits) for template, edits in selection]

    @extend_schema(
        summary="Compute and cache the embeddings of chosen images (or all) now, synchronously.",
        request=PrewarmRequestSerializer,
        responses={200: PrewarmResponseSerializer, **ERRORS, 503: ErrorSerializer},
    )
    @action(detail=True, methods=["post"])
    def prewarm(self, request, dataset_id=None):
        dataset = self.get_object()
        check_id_list(
            request.data,
            field="image_ids",
            setting="MAX_IMAGES_PER_DATASET",
            what="images",
            duplicate_code="duplicate_image",
        )
        data = _valid(PrewarmRequestSerializer, request.data)
        if "image_ids" in data:
            images = []
            for index, image_id in enumerate(data["image_ids"]):
                try:
                    images.append(image_get_for_user(user=request.user, image_id=image_id, dataset=dataset))
                except Http404:
                    raise ServiceError(
                        "invalid_image_id", "not an image of this dataset", field="image_ids", index=index
                    ) from None
        else:
            images = list(image_list_for_dataset(dataset=dataset))
        rows = [
            {
                "image_id": step.image.id.hex,
                "filename": step.image.filename,
                "computed": step.computed,
                "skipped": not step.computed and not step.error,
                "ms": step.ms,
                "error": step.error,
            }
            for step in embeddings_prewarm(images=images)
        ]
        summary = {
            "total": len(rows),
            "computed": sum(row["computed"] for row in rows),
            "skipped": sum(row["skipped"] for row in rows),
            "failed": sum(bool(row["error"]) for row in rows),
            "ms": sum(row["ms"] for row in rows),
            "backend": app_segmenter_status()["backend"],
            "images": rows,
        }
        return Response(PrewarmResponseSerializer(summary).data)


@extend_schema(tags=["images"])
@extend_schema_view(
    retrieve=extend_schema(responses={200: ImageSerializer, 404: ErrorSerializer}),
    partial_update=extend_schema(
        summary="Set the image's class ('' for none, 'pass', 'fail').",
        request=ImageClassSerializer,
        responses={200: ImageSerializer, **ERRORS},
    ),
    destroy=extend_schema(
        summary="Delete the image with its variants and files.", responses={204: None, 404: ErrorSerializer}
    ),
)
class ImageViewSet(viewsets.GenericViewSet):
    """One image of one of your datasets. Files: ``file/`` (original) and ``thumbnail/``."""

    lookup_url_kwarg = "image_id"
    serializer_class = ImageSerializer
    queryset = DatasetImage.objects.none()
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    throttle_classes = [ActionScopedRateThrottle]
    throttle_scopes = {"segment": PREVIEWS}

    def get_serializer_class(self):
        if _writes(self.request) and self.action in (
            "retrieve",
            "update",
            "partial_update",
        ):  # its PATCH form
            return ImageClassSerializer
        return super().get_serializer_class()

    def get_object(self) -> DatasetImage:
        return image_get_for_user(user=self.request.user, image_id=self.kwargs["image_id"])

    def retrieve(self, request, image_id=None):
        return Response(_rendered(ImageSerializer, self.get_object(), request))

    def partial_update(self, request, image_id=None):
        image = self.get_object()
        data = _valid(ImageClassSerializer, request.data)
        return Response(
            _rendered(ImageSerializer, image_set_class(image=image, image_class=data["image_class"]), request)
        )

    def destroy(self, request, image_id=None):
        image_delete(image=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Candidate masks for point and/or box prompts (top 3, best first), from the cached embedding.",
        description=(
            "Points are normalised `[{x_norm, y_norm, positive}]`, or pixels `[{x, y, positive}]` with "
            '`"units": "px"`; an optional normalised `box` `[x0, y0, x1, y1]`; at least one positive point or '
            "a box. Errors: `no_points`, `invalid_points` (with `index`), `invalid_box`, 503 "
            "`sam_model_not_loaded`."
        ),
        request=SegmentRequestSerializer,
        responses={200: SegmentResponseSerializer, **ERRORS, 503: ErrorSerializer},
    )
    @action(detail=True, methods=["post"])
    def segment(self, request, image_id=None):
        image = self.get_object()
        data = _valid(SegmentRequestSerializer, request.data)
        box = box_from_input(data.get("box"))
        raw_points = data.get("points")
        if box is not None and not raw_points:
            points = []  # a box alone is a prompt
        else:
            points = points_from_input(
                raw_points,
                units=data["units"],
                width=image.width,
                height=image.height,
                require_positive=box is None,
            )
        preview = segment_preview(image=image, points=points, box=box)
        masks = {
            "image_id": image.id.hex,
            "width": preview.width,
            "height": preview.height,
            "cached": preview.cached,
            "backend": app_segmenter_status(image.dataset)["backend"],
            "candidates": mask_candidates_json(preview.candidates),
        }
        return Response(SegmentResponseSerializer(masks).data)


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@extend_schema(tags=["datasets"])
class ModelListView(APIView):
    """The models a dataset may pick (site configuration, so any signed-in user may read it)."""

    @extend_schema(
        summary="The checkpoints in SAM_MODELS_DIR, by name, with family, size and fingerprint.",
        description="Files whose tensors match no family are listed with their `error` and cannot be picked.",
        responses={200: ModelSerializer(many=True)},
    )
    def get(self, request):
        default = site_checkpoint_name()
        rows = [
            {
                "name": info.name,
                "family": info.family,
                "size": info.size,
                "label": info.label,
                "fingerprint": info.fingerprint,
                "error": info.error,
                "default": info.name == default,
            }
            for info in available_models()
        ]
        return Response(ModelSerializer(rows, many=True).data)
