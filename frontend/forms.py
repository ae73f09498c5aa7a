"""Form parsing for the pages. Validation of names, points and edits stays in the services."""

from __future__ import annotations

from collections.abc import Mapping

from django import forms

from datasets.models import ComposeMode, ImageClass, OutputFormat
from imaging.edits import EDIT_FIELDS, EDIT_RANGES, NEUTRAL_VALUES
from samsite.common.parsers import loads_limited

CLASS_CHOICES = [
    ("", "any class"),
    (ImageClass.PASS, "pass and unclassed images"),
    (ImageClass.FAIL, "fail and unclassed images"),
]

#: What each slider does, in the words of EDITS.md; the UI shows them next to the sliders.
EDIT_HINTS: dict[str, str] = {
    "brightness": "adds b: positive lightens, negative darkens",
    "contrast": "scales around mid-grey by 1 + c: positive more contrast",
    "gamma": "x^(1/(1+g)): positive brightens mid-tones",
    "hue": "rotates colours by this many degrees (colour only)",
    "saturation": "colourfulness * (1 + s): -1 is grey (colour only)",
    "sharpen": "unsharp mask: adds a * the detail a 1 px blur removes",
    "noise": "adds Gaussian noise with this sigma (deterministic)",
    "opacity": "blends the edit over the original: 1 full, 0 none",
}

EDIT_STEPS: dict[str, float] = {
    "brightness": 0.01,
    "contrast": 0.01,
    "gamma": 0.01,
    "hue": 1,
    "saturation": 0.01,
    "sharpen": 0.01,
    "noise": 0.001,
    "opacity": 0.01,
}


def edit_field_name(template_hex: str, field: str) -> str:
    return f"t-{template_hex}-{field}"


def edits_from_post(data: Mapping, template_hex: str) -> dict[str, str]:
    """The raw slider values of one template (strings; blank means neutral). The services validate them."""
    values = {}
    for field in EDIT_FIELDS:
        raw = data.get(edit_field_name(template_hex, field))
        if raw is not None:
            values[field] = raw
    return values


def edit_field_id(template_hex: str, field: str) -> str:
    return f"e-{template_hex}-{field}"


#: Edits that change colour only: without effect (and disabled) when every image is grayscale.
COLOUR_ONLY = ("hue", "saturation")


def edit_rows(template_hex: str, edits: Mapping | None, *, grayscale: bool = False) -> list[dict]:
    """Everything a template's slider row needs: name, range, step, current and neutral value (and where
    it sits on the scale, in percent), hint, and whether it is disabled (colour edits on grayscale)."""
    edits = edits or {}
    rows = []
    for field in EDIT_FIELDS:
        low, high = EDIT_RANGES[field]
        neutral = NEUTRAL_VALUES[field]
        value = edits.get(field, neutral)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = neutral
        rows.append(
            {
                "field": field,
                "name": edit_field_name(template_hex, field),
                "id": edit_field_id(template_hex, field),
                "min": f"{low:g}",
                "max": f"{high:g}",
                "step": EDIT_STEPS[field],
                "value": f"{value:g}",
                "neutral": f"{neutral:g}",
                "neutral_pct": round(100 * (neutral - low) / (high - low), 2),
                "neutral_at": "min" if neutral == low else ("max" if neutral == high else "mid"),
                "changed": value != neutral,
                "hint": EDIT_HINTS[field],
                "disabled": grayscale and field in COLOUR_ONLY,
            }
        )
    return rows


class DatasetNameForm(forms.Form):
    name = forms.CharField(max_length=200, strip=True)


class ImageClassForm(forms.Form):
    image_class = forms.ChoiceField(choices=ImageClass.choices, required=False)


class TemplateSaveForm(forms.Form):
    template = forms.CharField(required=False)
    reference_image = forms.CharField(required=False)
    name = forms.CharField(max_length=200, required=False, strip=True)
    image_class = forms.ChoiceField(choices=CLASS_CHOICES, required=False)
    points = forms.CharField()
    box = forms.CharField(required=False)
    mask_choice = forms.ChoiceField(
        choices=[("best", "best"), ("0", "1"), ("1", "2"), ("2", "3")], required=False
    )

    def clean_box(self) -> object:
        """The raw box JSON (or None); templates_app.services validates it."""
        raw = (self.cleaned_data.get("box") or "").strip()
        if not raw or raw == "null":
            return None
        try:
            return loads_limited(raw)
        except ValueError:
            raise forms.ValidationError("the box is not valid JSON") from None

    def clean_points(self) -> list:
        try:
            points = loads_limited(self.cleaned_data["points"])
        except ValueError:
            raise forms.ValidationError("points are not valid JSON") from None
        if not isinstance(points, list):
            raise forms.ValidationError("points must be a list")
        return points


class GenerateForm(forms.Form):
    compose = forms.ChoiceField(choices=ComposeMode.choices, initial=ComposeMode.STACK)
    output_format = forms.ChoiceField(choices=OutputFormat.choices, initial=OutputFormat.PNG)
    export_mask = forms.BooleanField(required=False)


class PreviewForm(forms.Form):
    preview_image = forms.CharField(required=False)
    compose = forms.ChoiceField(choices=ComposeMode.choices, required=False)
