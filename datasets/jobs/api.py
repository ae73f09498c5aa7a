"""REST API of generation jobs and variants: thin views over ``datasets.jobs.services`` and the selectors.

Every object is resolved through the ownership accessors (``job_get_for_user``, ``variant_get_for_user``,
``dataset_get_for_user``), so another user's job, variant, ZIP or event stream is a 404.
"""

from __future__ import annotations

from django.urls import reverse
from django_eventstream.views import events as eventstream_events
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets.jobs.downloads import job_zip_response, variant_file_response
from datasets.jobs.events import (
    InvalidEventId,
    TooManyStreams,
    check_last_event_ids,
    invalid_event_id_response,
    job_channel,
    job_first_event_id,
    stream_slot_acquire,
    stream_slot_release,
    strip_stream_overrides,
    too_many_streams_response,
    with_stream_slot,
)
from datasets.jobs.exports import EXPORT_FORMATS, ExportError, export_response
from datasets.jobs.serializers import (
    JobCreateSerializer,
    JobDetailSerializer,
    JobItemSerializer,
    JobSerializer,
    TooManyStreamsSerializer,
    VariantSerializer,
)
from datasets.jobs.services import job_cancel, job_create, job_retry_failed
from datasets.models import STACK_TEMPLATE_KEY
from datasets.prompts import check_id_list
from datasets.selection import templates_from_input
from datasets.selectors import (
    dataset_get_for_user,
    job_get_for_user,
    job_items,
    job_list_for_user,
    variant_get_for_user,
    variant_list_for_job,
)
from samsite.common.db import parse_uuid
from samsite.common.errors import ServiceError
from samsite.common.fields import ErrorSerializer
from samsite.common.throttles import DOWNLOADS, JOBS, ScopedRateThrottle

_JOB_ID = OpenApiParameter("job_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="Job id (hex).")
_DATASET_ID = OpenApiParameter(
    "dataset_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="Dataset id."
)
_VARIANT_ID = OpenApiParameter(
    "variant_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="Variant id."
)


@extend_schema(tags=["jobs"])
class DatasetJobListCreateApi(generics.ListAPIView):
    """GET: the dataset's jobs, newest first. POST: start a job over every image of the dataset."""

    serializer_class = JobSerializer
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = JOBS

    def get_throttles(self):
        # Only creating a job costs work; reading the list is not throttled beyond the defaults.
        return super().get_throttles() if self.request.method == "POST" else []

    def get_serializer_class(self):
        # The browsable API renders its POST form from this: the fields a client may send.
        return JobCreateSerializer if self.request.method == "POST" else JobSerializer

    def get_queryset(self):
        dataset = dataset_get_for_user(user=self.request.user, dataset_id=self.kwargs["dataset_id"])
        return job_list_for_user(user=self.request.user, dataset=dataset)

    @extend_schema(parameters=[_DATASET_ID], operation_id="dataset_jobs_list")
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        parameters=[_DATASET_ID],
        request=JobCreateSerializer,
        responses={202: JobDetailSerializer},
        operation_id="dataset_jobs_create",
        description="Queue a job; templates omitted = all the dataset's templates with their default edits. "
        "Answers 202 with the job and its urls (events, variants, download).",
    )
    def post(self, request: Request, dataset_id: str) -> Response:
        dataset = dataset_get_for_user(user=request.user, dataset_id=dataset_id)
        check_id_list(
            request.data,
            field="templates",
            setting="MAX_TEMPLATES_PER_DATASET",
            what="templates",
            id_key="template_id",
            duplicate_code="duplicate_template",
        )
        serializer = JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        templates = templates_from_input(
            dataset,
            data.get("templates"),
            not_found=_template_not_found,
            limit=None,  # a job's templates are bounded by the dataset, not the preview limit
        )
        job = job_create(
            dataset=dataset,
            owner=request.user,
            templates=templates,
            compose=data["compose"],
            output_format=data["format"],
            export_mask=data["export_mask"],
        )
        job.refresh_from_db()  # the inline runner may already have run it
        return Response(
            JobDetailSerializer(job).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": reverse("api-job-detail", args=[job.id.hex])},
        )


def _template_not_found(template_id: object, index: int | None) -> ServiceError:
    return ServiceError("template_not_found", "no such template in this dataset", index=index)


@extend_schema(tags=["jobs"])
class JobListApi(generics.ListAPIView):
    """The user's job history across datasets, newest first."""

    serializer_class = JobSerializer

    def get_queryset(self):
        return job_list_for_user(user=self.request.user)


@extend_schema(tags=["jobs"])
class JobDetailApi(generics.RetrieveAPIView):
    """Status, counters, per-stage timings, encoder calls, cache hits, errors, template snapshot and the
    ``last_event_id`` to resume the event stream from."""

    serializer_class = JobDetailSerializer

    def get_object(self):
        return job_get_for_user(user=self.request.user, job_id=self.kwargs["job_id"])

    @extend_schema(parameters=[_JOB_ID])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


@extend_schema(tags=["jobs"])
class JobCancelApi(APIView):
    @extend_schema(
        parameters=[_JOB_ID],
        request=None,
        responses={202: JobDetailSerializer},
        description="A queued job is canceled at once; a running one stops after its current image.",
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = job_cancel(job=job_get_for_user(user=request.user, job_id=job_id))
        return Response(JobDetailSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["jobs"])
class JobRetryApi(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = JOBS

    @extend_schema(
        parameters=[_JOB_ID],
        request=None,
        responses={202: JobDetailSerializer},
        description="Queue an ended job again: failed items are redone, unfinished ones resumed.",
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = job_retry_failed(job=job_get_for_user(user=request.user, job_id=job_id))
        job.refresh_from_db()
        return Response(JobDetailSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["jobs"])
class JobItemListApi(generics.ListAPIView):
    """Per-image status of a job, in upload order."""

    serializer_class = JobItemSerializer

    def get_queryset(self):
        return job_items(job=job_get_for_user(user=self.request.user, job_id=self.kwargs["job_id"]))

    @extend_schema(parameters=[_JOB_ID])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


@extend_schema(tags=["jobs"])
class JobVariantListApi(generics.ListAPIView):
    serializer_class = VariantSerializer

    def get_queryset(self):
        job = job_get_for_user(user=self.request.user, job_id=self.kwargs["job_id"])
        queryset = variant_list_for_job(job=job)
        image = self.request.query_params.get("image")
        if image:
            image_pk = parse_uuid(image)
            if image_pk is None:
                raise ServiceError("invalid_filter", "image must be an image id", field="image")
            queryset = queryset.filter(image_id=image_pk)
        template = self.request.query_params.get("template")
        if template:
            if template != STACK_TEMPLATE_KEY:
                template_pk = parse_uuid(template)
                if template_pk is None:
                    raise ServiceError(
                        "invalid_filter", 'template must be a template id or "stack"', field="template"
                    )
                template = template_pk.hex
            queryset = queryset.filter(template_key=template)
        return queryset

    @extend_schema(
        parameters=[
            _JOB_ID,
            OpenApiParameter("image", OpenApiTypes.STR, description="Only this image's variants."),
            OpenApiParameter("template", OpenApiTypes.STR, description='A template id, or "stack".'),
        ]
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class _BinaryApi(APIView):
    """Views answering files: errors still come back as JSON whatever the Accept header."""

    def perform_content_negotiation(self, request, force=False):
        return JSONRenderer(), JSONRenderer.media_type


@extend_schema(tags=["jobs"])
class VariantFileApi(_BinaryApi):
    @extend_schema(
        parameters=[_VARIANT_ID],
        responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, "the image file")},
    )
    def get(self, request: Request, variant_id: str):
        variant = variant_get_for_user(user=request.user, variant_id=variant_id)
        if not variant.file:
            raise ServiceError(
                "not_found", "this annotation has no image (annotate job): see its mask", status=404
            )
        return variant_file_response(request, variant)


@extend_schema(tags=["jobs"])
class VariantMaskApi(_BinaryApi):
    @extend_schema(
        parameters=[_VARIANT_ID],
        responses={(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, "the mask (0/255 PNG)")},
    )
    def get(self, request: Request, variant_id: str):
        variant = variant_get_for_user(user=request.user, variant_id=variant_id)
        if not variant.mask_file:
            raise ServiceError("not_found", "this variant has no mask", status=404)
        return variant_file_response(request, variant, mask=True)


@extend_schema(tags=["jobs"])
class JobDownloadApi(_BinaryApi):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = DOWNLOADS

    @extend_schema(
        parameters=[_JOB_ID],
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, "variants, masks, manifest")
        },
        description="The job's variants as a streamed ZIP (see manifest.json inside). Available at any time: "
        "a running job's ZIP holds the variants made so far.",
    )
    def get(self, request: Request, job_id: str):
        job = job_get_for_user(user=request.user, job_id=job_id)
        return job_zip_response(request, job)


@extend_schema(tags=["jobs"])
class JobExportApi(_BinaryApi):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = DOWNLOADS

    @extend_schema(
        parameters=[
            _JOB_ID,
            OpenApiParameter(
                "format", OpenApiTypes.STR, required=True, enum=list(EXPORT_FORMATS), description="Layout."
            ),
            OpenApiParameter(
                "exclude_flagged",
                OpenApiTypes.BOOL,
                description="1: leave out annotations with a quality flag (and images left with none).",
            ),
        ],
        responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, "the export archive")},
        description="The job's masks as a training dataset, streamed as a ZIP (no Content-Length). Images: "
        "the stacked variants (stack), every variant (each) or the originals (annotate). Categories are the "
        "dataset's template labels, ids from 1 by first use (never renumbered), listed in every export. "
        "`coco`: annotations.json (COCO instance segmentation, compressed RLE from pycocotools, area, bbox, "
        "iscrowd 0, score, stability, flags) + images/. "
        "`yolo`: Ultralytics segmentation: images/, labels/<stem>.txt (`<class> x1 y1 ... xn yn` per polygon, "
        "normalised, holes bridged, class = id - 1), data.yaml. "
        "`voc`: JPEGImages/ (the images), SegmentationClass/<stem>.png (palette, 0 background, id per "
        "label, 255 where different labels overlap), ImageSets/Segmentation/default.txt, labelmap.txt. "
        "`masks`: masks/<stem>__<template>.png, one 0/255 PNG per (image, template). "
        "Every archive has a README.txt listing the categories, the failed images left out and the flagged "
        "annotations left out.",
    )
    def get(self, request: Request, job_id: str):
        job = job_get_for_user(user=request.user, job_id=job_id)
        fmt = request.query_params.get("format", "")
        if fmt not in EXPORT_FORMATS:
            raise ServiceError(
                "invalid_format",
                f"format must be one of {', '.join(EXPORT_FORMATS)}",
                field="format",
                choices=list(EXPORT_FORMATS),
            )
        flag = request.query_params.get("exclude_flagged", "0").strip().lower()
        if flag not in ("", "0", "1", "true", "false"):
            raise ServiceError("invalid_filter", "exclude_flagged must be 0 or 1", field="exclude_flagged")
        try:
            return export_response(request, job, fmt, exclude_flagged=flag in ("1", "true"))
        except ExportError as exc:
            raise ServiceError(exc.code, str(exc), field="format") from None


@extend_schema(tags=["jobs"])
class JobEventsApi(_BinaryApi):
    @extend_schema(
        parameters=[
            _JOB_ID,
            OpenApiParameter(
                "lastEventId",
                OpenApiTypes.STR,
                description="Resume after this event id (also read from the Last-Event-ID header). Without "
                "either, the stream starts with the job's first event.",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, "server-sent events"),
            400: OpenApiResponse(
                ErrorSerializer, "invalid_event_id: a malformed lastEventId / Last-Event-ID"
            ),
            429: TooManyStreamsSerializer,
        },
        description="Live events of the job (server-sent events; needs an ASGI server). Event types: "
        "status, item, done (JSON data), plus stream-open and keep-alive (every 20 s).",
    )
    def get(self, request: Request, job_id: str):
        job = job_get_for_user(user=request.user, job_id=job_id)
        django_request = request._request
        strip_stream_overrides(django_request)
        try:
            check_last_event_ids(django_request)
        except InvalidEventId as exc:
            return invalid_event_id_response(exc)
        if not django_request.META.get("HTTP_LAST_EVENT_ID") and not any(
            django_request.GET.getlist("lastEventId")
        ):
            # A new connection replays the job from its first event, so a client that connects just after
            # submitting never misses "running"; pages pass their render-time id instead.
            query = django_request.GET.copy()
            query["lastEventId"] = job_first_event_id(job)
            django_request.GET = query
        try:
            stream_slot_acquire(request.user)
        except TooManyStreams as exc:
            return too_many_streams_response(exc)
        response = eventstream_events(django_request, channels=[job_channel(job.id)])
        if not getattr(response, "is_async", False):
            stream_slot_release(request.user)  # an error answer, not a stream
            return response
        return with_stream_slot(request.user, response)
