"""Prompt and edit input, parsed from untrusted requests the same way by every interface (REST, seed API, pages,
templates), with the per-request limits. Errors are ServiceError with a stable code and the offending input."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from imaging.edits import Edits
from imaging.errors import BoxValidationError, EditValidationError, PointValidationError
from imaging.points import Point, parse_box, parse_points
from imaging.segmenter import parse_mask_choice
from samsite.common.errors import ServiceError


def points_from_input(
    raw: object,
    *,
    units: str = "norm",
    width: int | None = None,
    height: int | None = None,
    require_positive: bool = True,
) -> list[Point]:
    """Parse point prompts from untrusted input: normalised ``[{x_norm, y_norm, positive?}]``, or pixels
    (``units="px"``, with the image's ``width``/``height``). Values out of range are refused, never clamped.

    Raises ServiceError ``no_points`` (missing or empty), ``invalid_points`` (not a list, a bad point with its
    ``index``, unknown units, or no positive point when ``require_positive``), ``too_many_points`` (more than
    MAX_POINTS_PER_PROMPT).
    """
    if raw is None or (isinstance(raw, list | tuple) and not raw):
        raise ServiceError("no_points", "at least one point is required", field="points")
    if not isinstance(raw, list | tuple):
        raise ServiceError("invalid_points", "points must be a list of points", field="points")
    if units not in ("norm", "px"):
        raise ServiceError("invalid_points", "units must be 'norm' or 'px'", field="units")
    check_points_limit(len(raw))
    try:
        points = parse_points(list(raw), units=units, width=width, height=height)
    except PointValidationError as exc:
        raise ServiceError("invalid_points", str(exc), field="points", index=exc.index) from None
    if require_positive and not any(point.positive for point in points):
        raise ServiceError("invalid_points", "at least one positive point is required", field="points")
    return points


def check_points_limit(count: int) -> None:
    """ServiceError("too_many_points") naming MAX_POINTS_PER_PROMPT when a prompt has more points."""
    limit = settings.MAX_POINTS_PER_PROMPT
    if count > limit:
        raise ServiceError(
            "too_many_points",
            f"{count} points; a prompt may have at most {limit} (MAX_POINTS_PER_PROMPT)",
            field="points",
            limit="MAX_POINTS_PER_PROMPT",
            max=limit,
        )


def check_templates_per_preview(count: int) -> None:
    """ServiceError("too_many_templates") naming MAX_TEMPLATES_PER_PREVIEW for a preview listing more."""
    limit = settings.MAX_TEMPLATES_PER_PREVIEW
    if count > limit:
        raise ServiceError(
            "too_many_templates",
            f"{count} templates; a preview may use at most {limit} (MAX_TEMPLATES_PER_PREVIEW)",
            field="templates",
            limit="MAX_TEMPLATES_PER_PREVIEW",
            max=limit,
        )


def check_id_list(
    data: object,
    *,
    field: str,
    setting: str,
    what: str,
    id_key: str | None = None,
    duplicate_code: str,
) -> None:
    """Refuse the request body ``data``'s list ``data[field]`` when it is longer than ``settings.<setting>``
    (``too_many_<what>``) or names one id twice (``duplicate_code`` with the ``index``), before any of them is
    looked up. Entries may be ids or objects whose ``id_key`` (or ``"id"``) holds the id; a body that is not a
    mapping, a missing field and anything else are left to the caller's own validation."""
    values = data.get(field) if hasattr(data, "get") else None
    if not isinstance(values, list):
        return
    limit = getattr(settings, setting)
    if len(values) > limit:
        raise ServiceError(
            f"too_many_{what}",
            f"{len(values)} {what}; a request may name at most {limit} ({setting})",
            field=field,
            limit=setting,
            max=limit,
        )
    from samsite.common.db import parse_uuid

    seen: set = set()
    for index, entry in enumerate(values):
        raw = entry.get(id_key or "id", entry.get("id")) if isinstance(entry, dict) else entry
        if not isinstance(raw, str):
            continue
        key = parse_uuid(raw) or raw
        if key in seen:
            raise ServiceError(duplicate_code, f"{what[:-1]} listed twice", field=field, index=index)
        seen.add(key)


def points_to_json(points: list[Point]) -> list[dict]:
    return [{"x_norm": p.x_norm, "y_norm": p.y_norm, "positive": p.positive} for p in points]


def edits_from_input(raw: object, *, strict: bool = True, **extra: Any) -> Edits:
    """Validate edits by the imaging rules; ServiceError("invalid_edits") whose ``field`` is the bad key
    (``extra``, e.g. the index of a template in a request list, is added to the error)."""
    try:
        return Edits.from_dict(raw, strict=strict)  # type: ignore[arg-type]
    except EditValidationError as exc:
        raise ServiceError("invalid_edits", str(exc), field=exc.field, **extra) from None


def box_from_input(raw: object) -> tuple[float, float, float, float] | None:
    """Parse an optional normalised box prompt ``[x0, y0, x1, y1]`` (values in [0, 1], corners sorted); None
    or ``[]`` means no box. Raises ServiceError("invalid_box", field="box") for anything else."""
    try:
        return parse_box(raw)
    except BoxValidationError as exc:
        raise ServiceError("invalid_box", str(exc), field="box") from None


def box_to_json(box: tuple[float, float, float, float] | None) -> list[float] | None:
    return None if box is None else [float(v) for v in box]


def mask_choice_from_input(raw: object) -> str:
    """A template's ``mask_choice`` as stored: ``"best"`` (None/"" too) or ``"0"``..``"2"``. Raises
    ServiceError("invalid_mask_choice", field="mask_choice") naming the allowed values."""
    try:
        return str(parse_mask_choice(raw))
    except ValueError as exc:
        raise ServiceError("invalid_mask_choice", str(exc), field="mask_choice") from None
