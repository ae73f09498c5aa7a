"""Template writes: create, update, delete; and the point/edit validation every interface shares.

Errors are ServiceError with a stable code and the offending input: ``no_points`` (neither a positive point
nor a box), ``invalid_points`` (with ``index`` of the bad point when there is one), ``invalid_box``,
``invalid_mask_choice``, ``invalid_class``, ``invalid_edits`` (with ``field``),
``invalid_reference_image``, ``invalid_name``, ``invalid_label``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from datasets.models import Dataset, DatasetImage, image_class_from_input
from datasets.prompts import (
    box_from_input,
    box_to_json,
    edits_from_input,
    mask_choice_from_input,
    points_from_input,
    points_to_json,
)
from datasets.services.datasets import dataset_labels_register, dataset_lock
from datasets.services.names import clean_display_name
from imaging.edits import Edits
from samsite.common.errors import ServiceError
from templates_app.models import Template

TEMPLATE_FIELDS = frozenset(
    {"name", "label", "points", "box", "mask_choice", "image_class", "reference_image", "default_edits"}
)
LABEL_MAX_LENGTH = 200


def _clean_reference(dataset: Dataset, image: object) -> DatasetImage | None:
    if image is None:
        return None
    if not isinstance(image, DatasetImage) or image.dataset_id != dataset.id:
        raise ServiceError(
            "invalid_reference_image",
            "the reference image must be an image of the same dataset",
            field="reference_image",
        )
    return image


def _edits_json(raw: object) -> dict:
    """Only the non-neutral values are stored, so templates read back as what the user set."""
    edits = edits_from_input({} if raw is None else raw)
    neutral = Edits().to_dict()
    return {name: value for name, value in edits.to_dict().items() if value != neutral[name]}


def _clean_label(value: object) -> str:
    """A category label: trimmed, control characters removed, at most 200 characters; blank (or None) means
    "the template's name" and is stored as ""."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    try:
        return clean_display_name(value, field="label", max_length=LABEL_MAX_LENGTH)
    except ServiceError as exc:
        raise ServiceError("invalid_label", exc.message, field="label") from None


def _clean_prompt(points: object, box: object) -> tuple[list[dict], list[float] | None]:
    """(points JSON, box JSON) of a template: at least one positive point, or a box (then the points may be
    empty or only negative ones, which refine the box)."""
    clean_box = box_to_json(box_from_input(box))
    if clean_box is None:
        return points_to_json(points_from_input(points)), None
    if points is None or (isinstance(points, list | tuple) and not points):
        return [], clean_box
    return points_to_json(points_from_input(points, require_positive=False)), clean_box


def _default_name(dataset: Dataset) -> str:
    taken = set(dataset.templates.values_list("name", flat=True))
    number = len(taken) + 1
    while f"Template {number}" in taken:
        number += 1
    return f"Template {number}"


def template_create(
    *,
    dataset: Dataset,
    points: list[dict] | None,
    box: object = None,
    mask_choice: object = "best",
    name: str = "",
    image_class: str = "",
    reference_image: DatasetImage | None = None,
    default_edits: Mapping[str, Any] | None = None,
    label: str | None = "",
) -> Template:
    """Save a template at the end of the dataset's save order (ServiceError("max_templates_exceeded") when the
    dataset already holds MAX_TEMPLATES_PER_DATASET).

    ``points`` are normalised ``[{x_norm, y_norm, positive?}]`` (at least one positive, unless a ``box`` is
    given); ``box`` is an optional normalised ``[x0, y0, x1, y1]``; ``mask_choice`` is the candidate jobs use
    ("best" or an index 0..2, stored as "best"/"0".."2"); a blank ``name``
    becomes "Template N"; ``image_class`` is "", "pass" or "fail"; ``reference_image`` must belong to
    ``dataset``; ``default_edits`` follow the imaging ``Edits`` rules (unknown keys refused); ``label`` is
    the category name in exports (blank: the name; several templates may share one), registered in the
    dataset's label registry (``dataset_labels_register``) so its export id never changes.
    """
    parsed, clean_box = _clean_prompt(points, box)
    clean_choice = mask_choice_from_input(mask_choice)
    image_class = image_class_from_input(image_class)
    reference_image = _clean_reference(dataset, reference_image)
    edits = _edits_json(default_edits)
    clean_label = _clean_label(label)
    with transaction.atomic():
        dataset_lock(dataset=dataset)  # the count below holds until commit
        limit = settings.MAX_TEMPLATES_PER_DATASET
        if dataset.templates.count() >= limit:
            raise ServiceError(
                "max_templates_exceeded",
                f"the dataset already has {limit} templates (MAX_TEMPLATES_PER_DATASET)",
                limit="MAX_TEMPLATES_PER_DATASET",
                max=limit,
            )
        clean_name = clean_display_name(name) if (name or "").strip() else _default_name(dataset)
        last = dataset.templates.aggregate(last=Max("position"))["last"]
        template = Template(
            dataset=dataset,
            name=clean_name,
            label=clean_label,
            points=parsed,
            box=clean_box,
            mask_choice=clean_choice,
            image_class=image_class,
            reference_image=reference_image,
            default_edits=edits,
            position=0 if last is None else last + 1,
        )
        template.save()
        dataset_labels_register(dataset=dataset, labels=[template.effective_label])
    return template


def template_update(*, template: Template, **changes: Any) -> Template:
    """Change any of name, label, points, box, mask_choice, image_class, reference_image, default_edits (same
    rules as create, checked on the resulting points + box: removing the box of a template without a positive
    point is refused; a blank name is refused, a blank label means the name). Unknown keys are a programming
    error (TypeError)."""
    unknown = set(changes) - TEMPLATE_FIELDS
    if unknown:
        raise TypeError(f"template_update() got unexpected fields: {', '.join(sorted(unknown))}")
    update_fields = ["updated"]
    if "name" in changes:
        template.name = clean_display_name(changes["name"])
        update_fields.append("name")
    if "label" in changes:
        template.label = _clean_label(changes["label"])
        update_fields.append("label")
    if "points" in changes or "box" in changes:
        template.points, template.box = _clean_prompt(
            changes.get("points", template.points), changes.get("box", template.box)
        )
        update_fields += ["points", "box"]
    if "mask_choice" in changes:
        template.mask_choice = mask_choice_from_input(changes["mask_choice"])
        update_fields.append("mask_choice")
    if "image_class" in changes:
        template.image_class = image_class_from_input(changes["image_class"])
        update_fields.append("image_class")
    if "reference_image" in changes:
        template.reference_image = _clean_reference(template.dataset, changes["reference_image"])
        update_fields.append("reference_image")
    if "default_edits" in changes:
        template.default_edits = _edits_json(changes["default_edits"])
        update_fields.append("default_edits")
    with transaction.atomic():
        template.save(update_fields=update_fields)
        if "name" in changes or "label" in changes:
            # A new label (or, without one, a new name) is registered; the old one keeps its id.
            dataset_labels_register(dataset=template.dataset, labels=[template.effective_label])
    return template


def template_delete(*, template: Template) -> None:
    """Delete the template; the positions of the others keep their order (gaps are harmless)."""
    template.delete()
