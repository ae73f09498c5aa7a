"""Templates as the imaging pipeline sees them, and the frozen snapshot a generation job keeps.

A job stores ``template_snapshot(...)`` dicts so its history stays true after templates are edited or
deleted; ``spec_from_snapshot`` turns them back into ``imaging.pipeline.TemplateSpec`` values. The functions
read a template's fields only (no import of ``templates_app``: that app depends on ``datasets``, not the
other way round).
"""

from __future__ import annotations

from collections.abc import Mapping

from imaging.edits import Edits
from imaging.pipeline import TemplateSpec
from imaging.points import parse_box, parse_points
from imaging.segmenter import parse_mask_choice


def template_snapshot(template, edits: Mapping | None = None, *, strict: bool = True) -> dict:
    """A JSON-safe, self-contained copy of the template with the edits to run (its defaults when None).

    ``strict`` rejects unknown edit keys (typed API); the seed-compatible API passes False to ignore them.
    Raises ``imaging.errors.EditValidationError`` naming the bad field.
    """
    chosen = template.default_edits if edits is None else edits
    return {
        "template_id": template.id.hex,
        "name": template.name,
        "image_class": template.image_class,
        "position": template.position,
        "points": [
            {"x_norm": p.x_norm, "y_norm": p.y_norm, "positive": p.positive}
            for p in parse_points(template.points)
        ],
        "edits": Edits.from_dict(chosen, strict=strict).to_dict(),
        "label": template.label or template.name,
        "box": list(template.box) if template.box else None,
        "mask_choice": template.mask_choice or "best",
        # The quality flags compare each mask with the template's own points on this image.
        "reference_image_id": template.reference_image_id.hex if template.reference_image_id else None,
    }


def spec_from_snapshot(snapshot: Mapping) -> TemplateSpec:
    """The pipeline's view of a snapshot, box and mask choice included (snapshots from before boxes existed
    have neither key: no box, the best candidate)."""
    return TemplateSpec(
        id=snapshot["template_id"],
        name=snapshot["name"],
        points=tuple(parse_points(snapshot["points"])),
        image_class=snapshot.get("image_class", ""),
        edits=Edits.from_dict(snapshot.get("edits") or {}),
        order=snapshot.get("position", 0),
        box=parse_box(snapshot.get("box")),
        mask_choice=parse_mask_choice(snapshot.get("mask_choice", "best")),
    )


def spec_for_template(template, edits: Mapping | None = None, *, strict: bool = True) -> TemplateSpec:
    return spec_from_snapshot(template_snapshot(template, edits, strict=strict))
