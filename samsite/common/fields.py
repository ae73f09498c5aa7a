"""DRF fields and serializers every app's API uses: error bodies, point/box/edit prompts.

The prompt fields are raw JSON documented precisely for the OpenAPI schema; the services validate them (and
report the index or field of a bad value), so every interface refuses the same input with the same code.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from imaging.edits import EDIT_FIELDS, EDIT_RANGES
from samsite.common.parsers import JSONTooDeep, loads_limited


class LimitedJSONField(serializers.JSONField):
    """DRF's JSONField whose form-encoded (string) values are parsed by the project's depth-limited loader.

    DRF's own field calls plain ``json.loads`` on a form or multipart value, so a 100k-deep string raised
    RecursionError (a 500). Too deep or malformed is a 400 ``validation_error`` naming the field."""

    default_error_messages = {
        "invalid": "Value must be valid JSON.",
        "too_deep": "JSON nested deeper than {limit} levels (MAX_JSON_DEPTH).",
    }

    def to_internal_value(self, data):
        if self.binary or getattr(data, "is_json_string", False):
            if isinstance(data, bytes):
                try:
                    data = data.decode()
                except UnicodeDecodeError:
                    self.fail("invalid")
            try:
                return loads_limited(str(data))
            except JSONTooDeep:
                from samsite.common.parsers import max_json_depth

                self.fail("too_deep", limit=max_json_depth())
            except (TypeError, ValueError):
                self.fail("invalid")
        return super().to_internal_value(data)


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
class PointsField(LimitedJSONField):
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
class BoxField(LimitedJSONField):
    """Raw JSON handed to the box parser (``datasets.prompts.box_from_input``)."""


@extend_schema_field(SegmentPointSerializer(many=True))
class SegmentPointsField(LimitedJSONField):
    """Raw JSON handed to the point parser (normalised or pixel units)."""


@extend_schema_field(EditsSerializer)
class EditsField(LimitedJSONField):
    """Raw JSON handed to the imaging ``Edits`` rules (which name the bad field)."""


class ErrorSerializer(serializers.Serializer):
    """Every error: a stable code, a message, and where it applies the offending field and index."""

    error = serializers.CharField()
    detail = serializers.CharField()
    field = serializers.CharField(required=False)
    index = serializers.IntegerField(required=False)
