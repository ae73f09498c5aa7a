"""DRF serializers of the template API (shapes only; templates_app.services owns the rules)."""

from __future__ import annotations

from rest_framework import serializers

from datasets.serializers import CLASS_CHOICES
from samsite.common.fields import BoxField, EditsField, LimitedJSONField, PointsField
from templates_app.models import Template


class TemplateSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(format="hex", read_only=True)
    dataset = serializers.UUIDField(source="dataset_id", format="hex", read_only=True)
    reference_image = serializers.UUIDField(
        source="reference_image_id", format="hex", read_only=True, allow_null=True
    )
    points = PointsField(read_only=True)
    points_count = serializers.IntegerField(read_only=True)
    box = BoxField(read_only=True, allow_null=True)
    default_edits = EditsField(read_only=True, help_text="The non-neutral edit values.")
    label = serializers.CharField(
        source="effective_label", read_only=True, help_text="Category name in exports (default: the name)."
    )

    class Meta:
        model = Template
        fields = [
            "id",
            "dataset",
            "name",
            "label",
            "image_class",
            "reference_image",
            "points",
            "points_count",
            "box",
            "mask_choice",
            "default_edits",
            "position",
            "created",
            "updated",
        ]
        read_only_fields = fields


class TemplateWriteSerializer(serializers.Serializer):
    """Create (points required) or change (PATCH: any subset) a template."""

    name = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text='Blank on create: "Template N".'
    )
    label = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,  # the service trims (and strips control characters) for every interface
        help_text="Category name in exports, max 200 characters, may be shared by several templates; "
        "blank or omitted: the template's name.",
    )
    points = PointsField(
        required=False, help_text="At least one positive point (or a box); values in [0, 1]."
    )
    box = BoxField(
        required=False,
        allow_null=True,
        help_text="Optional box prompt [x0, y0, x1, y1] normalised to [0, 1]; null removes it.",
    )
    mask_choice = LimitedJSONField(
        required=False,
        help_text='The candidate jobs use: "best" (highest score) or 0, 1, 2 (SAM\'s candidates by granularity).',
    )
    image_class = serializers.ChoiceField(
        choices=CLASS_CHOICES,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="Images it applies to.",
    )
    reference_image = serializers.CharField(
        required=False, allow_null=True, help_text="Id of an image of the same dataset (or null)."
    )
    default_edits = EditsField(required=False, allow_null=True)
