"""Point prompts: validation of untrusted point lists and conversion to pixel coordinates.

Points are stored normalised to the image size (``x_norm``, ``y_norm`` in [0, 1]) so one template applies to
images of any size; :func:`denormalize` maps them to this image's pixels as
``x_px = clamp(round(x_norm * (w - 1)), 0, w - 1)`` (likewise ``y``), so 0 is the first pixel and 1 the last.

A box prompt is stored normalised as ``[x0, y0, x1, y1]`` in [0, 1], fractions of the image's width and
height measured at pixel EDGES (0 is the left edge of the first pixel, 1 the right edge of the last), which is
what a box dragged on a displayed image gives: :func:`denormalize_box` maps it to ``x * w`` / ``y * h``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from imaging.errors import BoxValidationError, PointValidationError
from imaging.parsing import parse_finite_number

_TRUE_STRINGS = frozenset({"true", "1", "yes", "on", "positive", "pos", "fg"})
_FALSE_STRINGS = frozenset({"false", "0", "no", "off", "negative", "neg", "bg"})


@dataclass(frozen=True)
class Point:
    """A normalised point prompt. ``positive`` is True for a foreground (include) point."""

    x_norm: float
    y_norm: float
    positive: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"x_norm": self.x_norm, "y_norm": self.y_norm, "positive": self.positive}


def _number(index: int, key: str, value: Any) -> float:
    if value is None:
        raise PointValidationError(index, f"{key} is required")
    return parse_finite_number(value, lambda message: PointValidationError(index, f"{key} {message}"))


def _flag(index: int, value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_STRINGS:
            return True
        if text in _FALSE_STRINGS:
            return False
    raise PointValidationError(index, f"positive must be true or false, got {value!r}")


def parse_points(
    raw: Sequence[Mapping[str, Any]],
    *,
    units: str = "norm",
    width: int | None = None,
    height: int | None = None,
) -> list[Point]:
    """Validate a list of point mappings into :class:`Point` values.

    ``units="norm"``: each point has ``x_norm`` and ``y_norm`` in [0, 1]. ``units="px"``: each point has pixel
    ``x`` and ``y`` in [0, width - 1] / [0, height - 1], normalised with ``width``/``height`` (required) as
    ``x / (width - 1)`` — the inverse of :func:`denormalize`. Out-of-range values are rejected, not clamped.
    Numeric strings are accepted; booleans, NaN and infinities are rejected. ``positive`` defaults to True and
    accepts booleans, 0/1 and "true"/"false". Errors raise :class:`PointValidationError` with ``index`` set.
    An empty list is valid here; callers decide whether they need points.
    """
    if units not in ("norm", "px"):
        raise ValueError(f"units must be 'norm' or 'px', got {units!r}")
    if units == "px" and (not width or not height or width < 1 or height < 1):
        raise ValueError("width and height are required (>= 1) for pixel units")
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise PointValidationError(0, "points must be a list")
    points: list[Point] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise PointValidationError(index, "must be an object with coordinates")
        if units == "norm":
            x = _number(index, "x_norm", item.get("x_norm"))
            y = _number(index, "y_norm", item.get("y_norm"))
            for key, value in (("x_norm", x), ("y_norm", y)):
                if not 0.0 <= value <= 1.0:
                    raise PointValidationError(index, f"{key} must be between 0 and 1, got {value:g}")
        else:
            assert width is not None and height is not None
            px = _number(index, "x", item.get("x"))
            py = _number(index, "y", item.get("y"))
            if not 0.0 <= px <= width - 1:
                raise PointValidationError(index, f"x must be between 0 and {width - 1}, got {px:g}")
            if not 0.0 <= py <= height - 1:
                raise PointValidationError(index, f"y must be between 0 and {height - 1}, got {py:g}")
            x = px / (width - 1) if width > 1 else 0.0
            y = py / (height - 1) if height > 1 else 0.0
        points.append(Point(x_norm=x, y_norm=y, positive=_flag(index, item.get("positive"))))
    return points


def denormalize(points: Sequence[Point], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates and labels for SAM: ``(coords float32 Nx2 as (x, y), labels int32 N)``.

    ``x_px = clamp(round(x_norm * (w - 1)), 0, w - 1)``, likewise ``y``; ``round`` is Python's round half to
    even, applied in float64. Labels are 1 for positive points and 0 for negative ones.
    """
    coords = np.zeros((len(points), 2), dtype=np.float32)
    labels = np.zeros(len(points), dtype=np.int32)
    for i, p in enumerate(points):
        coords[i, 0] = min(max(round(p.x_norm * (width - 1)), 0), width - 1)
        coords[i, 1] = min(max(round(p.y_norm * (height - 1)), 0), height - 1)
        labels[i] = 1 if p.positive else 0
    return coords, labels


def parse_box(raw: Any) -> tuple[float, float, float, float] | None:
    """Validate an untrusted normalised box ``[x0, y0, x1, y1]`` (a list/tuple of four numbers in [0, 1], or a
    mapping with those keys); None or an empty list means no box. Corners given in any order are sorted.
    Raises :class:`BoxValidationError` for anything else, including a box of zero width or height."""
    if raw is None or (isinstance(raw, Sequence) and not isinstance(raw, str | bytes) and len(raw) == 0):
        return None
    if isinstance(raw, Mapping):
        raw = [raw.get(k) for k in ("x0", "y0", "x1", "y1")]
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence) or len(raw) != 4:
        raise BoxValidationError("box must be a list of four numbers [x0, y0, x1, y1]")
    values = []
    for name, value in zip(("x0", "y0", "x1", "y1"), raw, strict=True):
        try:
            number = _number(0, name, value)
        except PointValidationError as exc:
            raise BoxValidationError(f"box {str(exc).removeprefix('point 0: ')}") from None
        if not 0.0 <= number <= 1.0:
            raise BoxValidationError(f"box {name} must be between 0 and 1, got {number:g}")
        values.append(number)
    x0, y0, x1, y1 = values
    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    if box[2] - box[0] <= 0.0 or box[3] - box[1] <= 0.0:
        raise BoxValidationError("box must have a non-zero width and height")
    return box


def denormalize_box(box: Sequence[float], width: int, height: int) -> np.ndarray:
    """A normalised box in pixel coordinates ``float32 (x0, y0, x1, y1)`` = ``(x0 * w, y0 * h, x1 * w,
    y1 * h)`` (pixel edges, see the module docstring), ready for ``Segmenter.predict(box=...)``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([x0 * width, y0 * height, x1 * width, y1 * height], dtype=np.float32)
