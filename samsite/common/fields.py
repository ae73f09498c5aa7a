"""DRF fields and serializers every app's API uses: error bodies, point/box/edit prompts.

The prompt fields are raw JSON documented precisely for the OpenAPI schema; the services validate them (and
report the index or field of a bad value), so every interface refuses the same input with the same code.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from imaging.edits import EDIT_FIELDS, EDIT_RANGES


class PointSerializer(serializers.Serializer):
    """A normalised point prompt."""

    x_norm = serializers.FloatField(min_value=0.0, max_value=1.0)
    y_norm = serializers.FloatField(min_value=0.0, max_value=1.0)
    positive = serializers.BooleanField(default=True, help_text="Foreground (true) or background (false).")


class SegmentPointSerializer(serializers.Serializer):
    """A point prompt: ``x_norm``/``y_norm`` in [0, 1], or with ``"units": "px"`` pixel ``x``/``y``."""

    x_norm = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    y_norm = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    x = serializers.FloatField(required=False, min_value=0.0, help_text="Pixels from the left (units 'px').")
    y = serializers.FloatField(required=False, min_value=0.0, help_text="Pixels from the top (units 'px').")
    positive = serializers.BooleanField(default=True)


class EditsSerializer(serializers.Serializer):
    """Edit values (every key optional; missing or null means no change). Unknown keys are refused."""

    def get_fields(self):
        return {
            name: serializers.FloatField(
                required=False,
                allow_null=True,
                min_value=EDIT_RANGES[name][0],
                max_value=EDIT_RANGES[name][1],
            )
            for name in EDIT_FIELDS
        }


@extend_schema_field(PointSerializer(many=True))
class PointsField(serializers.JSONField):
    """Raw JSON handed to the service, which reports the index of a bad point."""


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "number", "minimum": 0, "maximum": 1},
        "minItems": 4,
        "maxItems": 4,
        "nullable": True,
        "description": "Box prompt [x0, y0, x1, y1] normalised to [0, 1].",
    }
)
class BoxField(serializers.JSONField):
    """Raw JSON handed to the box parser (``datasets.prompts.box_from_input``)."""


@extend_schema_field(SegmentPointSerializer(many=True))
class SegmentPointsField(serializers.JSONField):
    """Raw JSON handed to the point parser (normalised or pixel units)."""


@extend_schema_field(EditsSerializer)
class EditsField(serializers.JSONField):
    """Raw JSON handed to the imaging ``Edits`` rules (which name the bad field)."""


class ErrorSerializer(serializers.Serializer):
    """Every error: a stable code, a message, and where it applies the offending field and index."""

    error = serializers.CharField()
    detail = serializers.CharField()
    field = serializers.CharField(required=False)
    index = serializers.IntegerField(required=False)
