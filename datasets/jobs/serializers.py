"""Serializers of the jobs API: job input, job/item/variant output. Ids are 32-char hex strings."""

from __future__ import annotations

from typing import get_type_hints

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from datasets.jobs.events import Counters, job_counters, job_first_event_id, job_last_event_id
from datasets.jobs.services import job_queue_position
from datasets.models import ComposeMode, GenerationJob, ItemStatus, JobItem, OutputFormat, Variant
from samsite.common.fields import ErrorSerializer, LimitedJSONField

MAX_ERRORS_SHOWN = 100


class JobTemplateInputSerializer(serializers.Serializer):
    template_id = serializers.CharField(max_length=64)
    edits = LimitedJSONField(required=False, allow_null=True, help_text="Edit values; omitted = defaults.")

    def validate_edits(self, value):
        if value is not None and not isinstance(value, dict):
            raise serializers.ValidationError("edits must be an object")
        return value


class JobCreateSerializer(serializers.Serializer):
    templates = JobTemplateInputSerializer(
        many=True,
        required=False,
        max_length=settings.MAX_TEMPLATES_PER_DATASET,
        help_text="Templates to apply with their edits; omitted = all, with defaults.",
    )
    compose = serializers.ChoiceField(choices=ComposeMode.choices, default=ComposeMode.STACK)
    format = serializers.ChoiceField(choices=OutputFormat.choices, default=OutputFormat.PNG)
    export_mask = serializers.BooleanField(default=False)


class TooManyStreamsSerializer(ErrorSerializer):
    """429 ``too_many_streams``: the user already has SSE_MAX_CONNECTIONS_PER_USER event streams open."""

    limit = serializers.IntegerField(
        help_text="Streams one user may have open (SSE_MAX_CONNECTIONS_PER_USER)."
    )
    setting = serializers.CharField(
        help_text='The setting that configures it: "SSE_MAX_CONNECTIONS_PER_USER".'
    )


def _counter_fields() -> dict[str, serializers.Field]:
    """One integer field per key of the event contract's ``Counters`` (the API and the events cannot drift)."""
    fields = {}
    for name, kind in get_type_hints(Counters).items():
        if kind is not int:
            raise TypeError(f"Counters.{name} is {kind!r}; JobCountersSerializer only maps int counters")
        fields[name] = serializers.IntegerField()
    return fields


JobCountersSerializer = type(
    "JobCountersSerializer",
    (serializers.Serializer,),
    {"__module__": __name__, "__doc__": "The job's counters (``events.Counters``).", **_counter_fields()},
)


class JobUrlsSerializer(serializers.Serializer):
    self = serializers.CharField()
    events = serializers.CharField()
    items = serializers.CharField()
    variants = serializers.CharField()
    download = serializers.CharField()
    export = serializers.CharField(help_text="Append ?format=coco|yolo|voc|masks[&exclude_flagged=1].")
    cancel = serializers.CharField()
    retry = serializers.CharField()


def job_urls(job: GenerationJob) -> dict:
    hex_id = job.id.hex
    return {
        "self": reverse("api-job-detail", args=[hex_id]),
        "events": reverse("api-job-events", args=[hex_id]),
        "items": reverse("api-job-items", args=[hex_id]),
        "variants": reverse("api-job-variants", args=[hex_id]),
        "download": reverse("api-job-download", args=[hex_id]),
        "export": reverse("api-job-export", args=[hex_id]),
        "cancel": reverse("api-job-cancel", args=[hex_id]),
        "retry": reverse("api-job-retry", args=[hex_id]),
    }


class JobSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(format="hex", read_only=True)
    dataset = serializers.UUIDField(source="dataset_id", format="hex", read_only=True)
    format = serializers.CharField(source="output_format", read_only=True)
    counters = serializers.SerializerMethodField()
    duration_ms = serializers.IntegerField(read_only=True, allow_null=True)
    urls = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField(
        help_text="While the job waits (queued): the turns of the round-robin between users before its first "
        "chunk (1 = next). Null once it runs or ended."
    )

    class Meta:
        model = GenerationJob
        fields = [
            "id",
            "dataset",
            "status",
            "compose",
            "format",
            "export_mask",
            "source",
            "segmenter",
            "counters",
            "encoder_calls",
            "cache_hits",
            "timings_ms",
            "error",
            "cancel_requested",
            "created",
            "started_at",
            "finished_at",
            "duration_ms",
            "queue_position",
            "urls",
        ]
        read_only_fields = fields

    @extend_schema_field(JobCountersSerializer)
    def get_counters(self, job: GenerationJob) -> dict:
        return job_counters(job)

    @extend_schema_field(JobUrlsSerializer)
    def get_urls(self, job: GenerationJob) -> dict:
        return job_urls(job)

    def get_queue_position(self, job: GenerationJob) -> int | None:
        return job_queue_position(job)


class JobItemErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    image_id = serializers.CharField()
    filename = serializers.CharField()
    error = serializers.CharField()


class JobDetailSerializer(JobSerializer):
    """A job with its template snapshot, failed items and the event id to resume its stream from."""

    templates = serializers.JSONField(source="templates_snapshot", read_only=True)
    errors = serializers.SerializerMethodField()
    last_event_id = serializers.SerializerMethodField(
        help_text="Connect to the events URL with ?lastEventId=<this> to get every event after this response."
    )
    first_event_id = serializers.SerializerMethodField(
        help_text="?lastEventId=<this> replays the job's whole event history (the default when none is given)."
    )

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "templates", "errors", "last_event_id", "first_event_id"]
        read_only_fields = fields

    @extend_schema_field(JobItemErrorSerializer(many=True))
    def get_errors(self, job: GenerationJob) -> list[dict]:
        failed = job.items.filter(status=ItemStatus.FAILED).select_related("image").order_by("index")
        return [
            {"index": i.index, "image_id": i.image_id.hex, "filename": i.image.filename, "error": i.error}
            for i in failed[:MAX_ERRORS_SHOWN]
        ]

    @extend_schema_field(OpenApiTypes.STR)
    def get_last_event_id(self, job: GenerationJob) -> str:
        return job_last_event_id(job)

    @extend_schema_field(OpenApiTypes.STR)
    def get_first_event_id(self, job: GenerationJob) -> str:
        return job_first_event_id(job)


class JobItemSerializer(serializers.ModelSerializer):
    image_id = serializers.UUIDField(format="hex", read_only=True)
    filename = serializers.CharField(source="image.filename", read_only=True)
    image_class = serializers.CharField(source="image.image_class", read_only=True)

    class Meta:
        model = JobItem
        fields = [
            "index",
            "image_id",
            "filename",
            "image_class",
            "status",
            "attempts",
            "error",
            "ms",
            "cache_hit",
        ]
        read_only_fields = fields


class VariantUrlsSerializer(serializers.Serializer):
    file = serializers.CharField(allow_null=True, help_text="Null for an annotation (annotate jobs).")
    mask = serializers.CharField(allow_null=True)


class VariantSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(format="hex", read_only=True)
    job_id = serializers.UUIDField(format="hex", read_only=True)
    image_id = serializers.UUIDField(format="hex", read_only=True)
    image_filename = serializers.CharField(source="image.filename", read_only=True)
    template_id = serializers.UUIDField(format="hex", read_only=True, allow_null=True)
    template_ids = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Hex ids of the templates applied, in order (one for compose=each, all that applied for stack).",
    )
    flags = serializers.JSONField(
        read_only=True, help_text="Quality flags: [{code, template_id, label, detail}]; empty = fine."
    )
    labels = serializers.SerializerMethodField(help_text="Category labels of the masks it carries.")
    urls = serializers.SerializerMethodField()

    class Meta:
        model = Variant
        fields = [
            "id",
            "job_id",
            "image_id",
            "image_filename",
            "template_key",
            "template_id",
            "template_ids",
            "template_names",
            "score",
            "area",
            "width",
            "height",
            "sha256",
            "stability",
            "flags",
            "labels",
            "urls",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_labels(self, variant: Variant) -> list[str]:
        return [a["label"] for a in variant.annotations or []]

    @extend_schema_field(VariantUrlsSerializer)
    def get_urls(self, variant: Variant) -> dict:
        hex_id = variant.id.hex
        return {
            "file": reverse("api-variant-file", args=[hex_id]) if variant.file else None,
            "mask": reverse("api-variant-mask", args=[hex_id]) if variant.mask_file else None,
        }
