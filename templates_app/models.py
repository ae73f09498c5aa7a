"""Templates: point prompts in normalised coordinates, reusable on every image of a dataset."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from datasets.models import Dataset, DatasetImage, ImageClass
from samsite.common.db import BaseModel


def validate_points(value: object) -> None:
    """Points are ``[{x_norm, y_norm, positive}]`` with coordinates in [0, 1]; the list may be empty (a template
    with a box; :meth:`Template.clean` requires a positive point or a box)."""
    from imaging.errors import PointValidationError
    from imaging.points import parse_points

    if not isinstance(value, list):
        raise ValidationError("points must be a list")
    try:
        parse_points(value)
    except PointValidationError as exc:
        raise ValidationError(str(exc)) from exc


class Template(BaseModel):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="templates")
    name = models.CharField(max_length=200)
    image_class = models.CharField(
        max_length=4, choices=ImageClass.choices, blank=True, default="", help_text="Images it applies to."
    )
    reference_image = models.ForeignKey(
        DatasetImage, on_delete=models.SET_NULL, null=True, blank=True, related_name="reference_for"
    )
    points = models.JSONField(validators=[validate_points])
    box = models.JSONField(
        null=True, blank=True, help_text="Optional box prompt [x0, y0, x1, y1], normalised to [0, 1]."
    )
    label = models.CharField(
        max_length=200, blank=True, help_text="Category name in exports; blank means the template's name."
    )
    mask_choice = models.CharField(
        max_length=4,
        default="best",
        help_text='Which of the candidate masks jobs use: "best" (highest score) or a candidate index "0".."2".',
    )
    default_edits = models.JSONField(default=dict, blank=True)
    position = models.PositiveIntegerField(help_text="Save order within the dataset; stacking follows it.")

    class Meta:
        ordering = ["dataset", "position"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "position"], name="template_unique_position")
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """A template needs at least one positive point or a box (the rule of templates_app.services)."""
        from imaging.errors import BoxValidationError
        from imaging.points import parse_box

        try:
            box = parse_box(self.box)
        except BoxValidationError as exc:
            raise ValidationError({"box": str(exc)}) from exc
        positive = any(isinstance(p, dict) and p.get("positive", True) for p in self.points or [])
        if box is None and not positive:
            raise ValidationError({"points": "a template needs at least one positive point or a box"})

    @property
    def effective_label(self) -> str:
        return self.label or self.name

    @property
    def points_count(self) -> int:
        return len(self.points or [])
