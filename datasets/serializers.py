"""DRF serializers of the dataset API: output shapes, and request shapes for the OpenAPI schema.

Request serializers only check types and shapes; the services own the rules (points, edits, limits) so the
REST API, the pages and the seed-compatible API refuse the same inputs with the same codes.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from datasets.models import ComposeMode, Dataset, DatasetImage, ImageClass
from samsite.common.fields import BoxField, EditsField, LimitedJSONField, SegmentPointsField

CLASS_CHOICES = ImageClass.choices


def _absolute(request, path: str) -> str:
    return request.build_absolute_uri(path) if request is not None else path


# --- datasets ---------------------------------------------------------------------------------------------


class DatasetSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(format="hex", read_only=True)
    image_count = serializers.SerializerMethodField()
    template_count = serializers.SerializerMethodField()
    job_count = serializers.SerializerMethodField()
    last_job_status = serializers.SerializerMethodField()
    images_url = serializers.SerializerMethodField()
    templates_url = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "created",
            "updated",
            "image_count",
            "template_count",
            "job_count",
            "last_job_status",
            "checkpoint",
            "images_url",
            "templates_url",
        ]
        read_only_fields = fields

    # Counts come annotated from dataset_list_for_user; a dataset from elsewhere is counted on demand.
    @extend_schema_field(OpenApiTypes.INT)
    def get_image_count(self, obj: Dataset) -> int:
        return _count(obj, "image_count", "images")

    @extend_schema_field(OpenApiTypes.INT)
    def get_template_count(self, obj: Dataset) -> int:
        return _count(obj, "template_count", "templates")

    @extend_schema_field(OpenApiTypes.INT)
    def get_job_count(self, obj: Dataset) -> int:
        return _count(obj, "job_count", "jobs")

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_last_job_status(self, obj: Dataset) -> str | None:
        if hasattr(obj, "last_job_status"):
            return obj.last_job_status
        job = obj.jobs.order_by("-created").only("status").first()
        return job.status if job else None

    @extend_schema_field(OpenApiTypes.URI)
    def get_images_url(self, obj: Dataset) -> str:
        return _absolute(self.context.get("request"), reverse("dataset-images", args=[obj.id.hex]))

    @extend_schema_field(OpenApiTypes.URI)
    def get_templates_url(self, obj: Dataset) -> str:
        return _absolute(self.context.get("request"), reverse("dataset-templates", args=[obj.id.hex]))


def _count(obj: Dataset, attribute: str, relation: str) -> int:
    value = getattr(obj, attribute, None)
    return int(value) if value is not None else getattr(obj, relation).count()


class DatasetWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, help_text="Display name (control characters are removed).")
    checkpoint = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="The model it segments with: a file name from GET /api/models/; blank: the site's model.",
    )


class ModelSerializer(serializers.Serializer):
    """A checkpoint of SAM_MODELS_DIR, described from its tensors (``error`` set: unusable)."""

    name = serializers.CharField(help_text="File name; the value of a dataset's `checkpoint`.")
    family = serializers.CharField(allow_null=True, help_text="sam, sam_hq, mobile_sam or sam2.")
    size = serializers.CharField(allow_null=True)
    label = serializers.CharField(allow_null=True, help_text='Family and size for people, e.g. "SAM vit_b".')
    fingerprint = serializers.CharField(allow_null=True, help_text="The embedding cache key of its features.")
    error = serializers.CharField(allow_null=True)
    default = serializers.BooleanField(help_text="The site's model (datasets with a blank checkpoint).")


# --- images -----------------------------------------------------------------------------------------------


class ImageSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(format="hex", read_only=True)
    dataset = serializers.UUIDField(source="dataset_id", format="hex", read_only=True)
    file_url = serializers.SerializerMethodField(help_text="The original file (authenticated download).")
    thumbnail_url = serializers.SerializerMethodField(help_text="PNG thumbnail, longest side 160 px.")

    class Meta:
        model = DatasetImage
        fields = [
            "id",
            "dataset",
            "filename",
            "original_filename",
            "width",
            "height",
            "size_bytes",
            "sha256",
            "is_grayscale",
            "image_class",
            "position",
            "created",
            "file_url",
            "thumbnail_url",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_file_url(self, obj: DatasetImage) -> str:
        return _absolute(self.context.get("request"), reverse("image-file", args=[obj.id.hex]))

    @extend_schema_field(OpenApiTypes.URI)
    def get_thumbnail_url(self, obj: DatasetImage) -> str:
        return _absolute(self.context.get("request"), reverse("image-thumbnail", args=[obj.id.hex]))


class ImageClassSerializer(serializers.Serializer):
    image_class = serializers.ChoiceField(choices=CLASS_CHOICES, allow_blank=True, help_text="'' means none.")


class ImageUploadSerializer(serializers.Serializer):
    """multipart/form-data: repeat ``images`` for each file (``images[]`` is accepted too) and/or one ``zip``."""

    images = serializers.ListField(child=serializers.FileField(), required=False)
    zip = serializers.FileField(required=False, help_text="A ZIP archive; its image entries are added.")


class RejectedFileSerializer(serializers.Serializer):
    filename = serializers.CharField()
    error = serializers.CharField(help_text='"<code>: <detail>", e.g. "duplicate: same content as a.png".')


class UploadResultSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Number of images created.")
    created = ImageSerializer(many=True)
    rejected = RejectedFileSerializer(many=True)
    dataset = DatasetSerializer()


# --- previews ---------------------------------------------------------------------------------------------


class SegmentRequestSerializer(serializers.Serializer):
    points = SegmentPointsField(
        required=False,
        help_text="[{x_norm, y_norm, positive}] in [0, 1]; with units 'px': [{x, y, positive}] in pixels.",
    )
    units = serializers.ChoiceField(choices=["norm", "px"], default="norm")
    box = BoxField(
        required=False, allow_null=True, help_text="Optional box [x0, y0, x1, y1], normalised to [0, 1]."
    )


class MaskCandidateSerializer(serializers.Serializer):
    rank = serializers.IntegerField(help_text="1 is the best.")
    score = serializers.FloatField()
    area = serializers.IntegerField(help_text="Mask pixels.")
    bbox = serializers.ListField(
        child=serializers.IntegerField(), allow_null=True, help_text="[xmin, ymin, xmax, ymax], inclusive."
    )
    mask_png = serializers.CharField(help_text="Single-channel 0/255 PNG, base64, at the image size.")


class SegmentResponseSerializer(serializers.Serializer):
    image_id = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    cached = serializers.BooleanField(help_text="The embedding came from the cache (no encoder call).")
    backend = serializers.CharField()
    candidates = MaskCandidateSerializer(many=True)


class PreviewTemplateSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="A template of this dataset.")
    edits = EditsField(required=False, allow_null=True, help_text="Omitted: the template's default edits.")


@extend_schema_field(PreviewTemplateSerializer(many=True))
class PreviewTemplatesField(LimitedJSONField):
    """Raw JSON checked item by item by the view, which reports the index of a bad entry."""


class EditPreviewRequestSerializer(serializers.Serializer):
    image_id = serializers.CharField(required=False, help_text="Default: the dataset's first image.")
    templates = PreviewTemplatesField(
        required=False,
        help_text="[{id, edits?}] (stacked in save order); omitted: every template with its default edits.",
    )
    compose = serializers.ChoiceField(choices=ComposeMode.choices, default=ComposeMode.STACK)
    output = serializers.ChoiceField(
        choices=["json", "image"],
        default="json",
        help_text="'image' answers with the PNG itself (also ?as=image) instead of JSON with base64.",
    )


class EditPreviewResponseSerializer(serializers.Serializer):
    image_id = serializers.CharField()
    filename = serializers.CharField()
    applied = serializers.BooleanField(
        help_text="False when no template applies: variant_png is the original."
    )
    template_ids = serializers.ListField(child=serializers.CharField())
    template_names = serializers.ListField(child=serializers.CharField())
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    score = serializers.FloatField()
    area = serializers.IntegerField()
    variant_png = serializers.CharField(help_text="PNG, base64.")


class PrewarmRequestSerializer(serializers.Serializer):
    image_ids = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        max_length=settings.MAX_IMAGES_PER_DATASET,
        help_text="Images of this dataset; omitted: all of them.",
    )


class PrewarmImageSerializer(serializers.Serializer):
    image_id = serializers.CharField()
    filename = serializers.CharField()
    computed = serializers.BooleanField()
    skipped = serializers.BooleanField()
    ms = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True)


class PrewarmResponseSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    computed = serializers.IntegerField()
    skipped = serializers.IntegerField()
    failed = serializers.IntegerField()
    ms = serializers.IntegerField()
    backend = serializers.CharField()
    images = PrewarmImageSerializer(many=True)
