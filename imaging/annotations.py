"""Masks as training annotations: COCO RLE, polygons (YOLO), boxes, stability scores and quality checks.

Pure numpy/OpenCV/pycocotools, no Django. Conventions:

* Masks are bool (or 0/non-0) ``H x W`` arrays at the image's size.
* RLE is COCO's *compressed* RLE as ``pycocotools.mask.encode`` makes it, with ``counts`` decoded to ``str``
  so it is JSON-safe: ``{"size": [h, w], "counts": "..."}``. :func:`rle_decode` gives back exactly the mask.
* Boxes are COCO ``[x, y, width, height]`` in pixels (``pycocotools.mask.toBbox``: the extent of the pixels,
  so a single pixel at (3, 4) is ``[3, 4, 1, 1]``); an empty mask has ``[0, 0, 0, 0]``.
* Polygons are integer pixel vertices (x, y) of boundary pixel centres, as ``cv2.findContours`` gives them;
  :func:`polygons_to_mask` (``cv2.fillPoly`` per polygon, united) rasterises them back exactly for shapes
  without holes. A mask with several parts gives one polygon per part (each >= 3 vertices: a one-pixel part
  repeats its vertex, a one-pixel-wide line goes there and back). Holes are kept by bridging each hole into
  its outer polygon at their nearest vertices (a zero-width cut, the Ultralytics way): filled by OpenCV, the
  bridged polygon leaves the hole empty.
* Stability (SAM's automatic mask generator's definition): IoU of the mask thresholded at
  ``threshold + offset`` and at ``threshold - offset`` of the mask logits; 1.0 is a mask that does not move
  when the threshold does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils

#: YOLO segmentation lines need at least this many vertices.
MIN_POLYGON_POINTS = 3


def _as_uint8(mask: np.ndarray) -> np.ndarray:
    """A 0/1 uint8 C-contiguous view (bool masks are not copied)."""
    m = np.ascontiguousarray(mask)
    if m.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {m.shape}")
    if m.dtype == np.bool_:
        return m.view(np.uint8)
    return (m != 0).view(np.uint8)


# --- RLE, area, box ----------------------------------------------------------------------------------


def rle_encode(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of ``mask``: ``{"size": [h, w], "counts": str}``."""
    # Column-major pixels = the transposed image in row-major order; cv2.transpose is ~10x numpy's copy.
    rle = mask_utils.encode(cv2.transpose(_as_uint8(mask)).T)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _coco_rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def rle_decode(rle: dict) -> np.ndarray:
    """The bool ``H x W`` mask of a compressed RLE (``counts`` as str or bytes)."""
    return mask_utils.decode(_coco_rle(rle)).astype(bool)


def rle_area(rle: dict) -> int:
    return int(mask_utils.area(_coco_rle(rle)))


def rle_bbox(rle: dict) -> list[float]:
    """COCO ``[x, y, w, h]`` of the RLE's pixels (zeros when empty)."""
    return [float(v) for v in mask_utils.toBbox(_coco_rle(rle))]


# --- Polygons ------------------------------------------------------------------------------------------


def _bridge(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``outer`` with ``hole`` spliced in at their closest vertices (there and back along one cut)."""
    best = (np.inf, 0, 0)
    for start in range(0, len(hole), 512):  # blocks keep the distance matrix small on long contours
        block = hole[start : start + 512]
        d = ((outer[:, None, :].astype(np.int64) - block[None, :, :]) ** 2).sum(axis=2)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < best[0]:
            best = (d[i, j], int(i), int(start + j))
    _, i, j = best
    return np.concatenate([outer[: i + 1], hole[j:], hole[: j + 1], outer[i:]])


def _min_points(polygon: np.ndarray) -> np.ndarray:
    if len(polygon) >= MIN_POLYGON_POINTS:
        return polygon
    if len(polygon) == 1:
        return np.repeat(polygon, MIN_POLYGON_POINTS, axis=0)
    return np.concatenate([polygon, polygon[-2::-1]])[: max(MIN_POLYGON_POINTS, len(polygon))]


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Polygons of ``mask`` (see the module docstring): one ``N x 2`` int32 array (x, y) per part, holes
    bridged in, each with at least 3 vertices; [] for an empty mask."""
    m = _as_uint8(mask)
    if not m.any():
        return []
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    links = hierarchy[0]
    polygons = []
    for index, contour in enumerate(contours):
        if links[index][3] >= 0:
            continue  # a hole: spliced into its parent below
        polygon = contour.reshape(-1, 2).astype(np.int32)
        child = links[index][2]
        while child >= 0:
            hole = contours[child].reshape(-1, 2).astype(np.int32)
            polygon = _bridge(polygon, hole)
            child = links[child][0]
        polygons.append(_min_points(polygon))
    return polygons


def polygons_to_mask(polygons: Sequence[np.ndarray], *, width: int, height: int) -> np.ndarray:
    """Rasterise pixel polygons (each filled by OpenCV, then united) into a bool ``height x width`` mask."""
    out = np.zeros((height, width), dtype=np.uint8)
    for polygon in polygons:
        layer = np.zeros_like(out)
        cv2.fillPoly(layer, [np.round(np.asarray(polygon)).astype(np.int32).reshape(-1, 1, 2)], 1)
        out |= layer
    return out.astype(bool)


def yolo_lines(mask: np.ndarray, class_id: int) -> list[str]:
    """Ultralytics segmentation label lines of ``mask``: ``<class> x1 y1 ... xn yn`` per polygon, coordinates
    normalised by the mask's width and height (6 decimals, exact back to pixels for images up to 10^5 px)."""
    height, width = np.asarray(mask).shape[:2]
    lines = []
    for polygon in mask_polygons(mask):
        coords = polygon.astype(np.float64) / np.array([width, height], dtype=np.float64)
        lines.append(f"{int(class_id)} " + " ".join(f"{v:.6f}" for v in coords.reshape(-1)))
    return lines


# --- Stability and quality -----------------------------------------------------------------------------


def stability_score(logits: np.ndarray, *, threshold: float = 0.0, offset: float = 1.0) -> float:
    """IoU of ``logits > threshold + offset`` and ``logits > threshold - offset`` (the first lies inside the
    second, so it is a ratio of counts); 0.0 when nothing passes the lower threshold."""
    values = np.asarray(logits, dtype=np.float32)
    union = int(np.count_nonzero(values > threshold - offset))
    if union == 0:
        return 0.0
    return float(np.count_nonzero(values > threshold + offset)) / union


@dataclass(frozen=True)
class MaskStats:
    """Size and place of a mask relative to its image: ``fraction`` of the image's pixels, ``centroid`` in
    normalised (x, y) (None when empty)."""

    area: int
    fraction: float
    centroid: tuple[float, float] | None

    def to_dict(self) -> dict:
        return {"area": self.area, "fraction": self.fraction, "centroid": list(self.centroid or []) or None}

    @classmethod
    def from_dict(cls, data: dict) -> MaskStats:
        centroid = data.get("centroid")
        return cls(int(data["area"]), float(data["fraction"]), tuple(centroid) if centroid else None)


def mask_stats(mask: np.ndarray) -> MaskStats:
    m = _as_uint8(mask)
    height, width = m.shape
    area = int(np.count_nonzero(m))
    if area == 0:
        return MaskStats(0, 0.0, None)
    # First moments from the column and row counts (cheaper than cv2.moments on large masks); pixel
    # centres at +0.5 so the centroid of the whole image is (0.5, 0.5).
    columns = cv2.reduce(m, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).reshape(-1)
    rows = cv2.reduce(m, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).reshape(-1)
    cx = (float(np.dot(columns, np.arange(width, dtype=np.float64))) / area + 0.5) / width
    cy = (float(np.dot(rows, np.arange(height, dtype=np.float64))) / area + 0.5) / height
    return MaskStats(area, area / float(height * width), (float(cx), float(cy)))


@dataclass(frozen=True)
class QualityThresholds:
    """When a mask needs review: it covers more than ``max_area_fraction`` of the image; its area fraction is
    over ``area_drift_ratio`` times smaller or larger than the reference mask's; its centroid lies further
    than ``centroid_drift`` (normalised, Euclidean) from the reference mask's."""

    max_area_fraction: float = 0.9
    area_drift_ratio: float = 4.0
    centroid_drift: float = 0.25


#: Flag codes, in the order they are reported.
FLAG_EMPTY = "empty"
FLAG_WHOLE_IMAGE = "whole_image"
FLAG_AREA_DRIFT = "area_drift"
FLAG_CENTROID_DRIFT = "centroid_drift"


def quality_flags(
    stats: MaskStats, reference: MaskStats | None, thresholds: QualityThresholds
) -> list[tuple[str, str]]:
    """``(code, detail)`` pairs for what is doubtful about a mask (empty: nothing else is checked); the drift
    checks need a non-empty ``reference`` mask."""
    if stats.area == 0:
        return [(FLAG_EMPTY, "the mask is empty")]
    flags = []
    if stats.fraction > thresholds.max_area_fraction:
        flags.append((FLAG_WHOLE_IMAGE, f"the mask covers {stats.fraction:.0%} of the image"))
    if reference is not None and reference.area > 0 and reference.centroid is not None:
        ratio = stats.fraction / reference.fraction
        if ratio > thresholds.area_drift_ratio or ratio < 1.0 / thresholds.area_drift_ratio:
            flags.append(
                (FLAG_AREA_DRIFT, f"the mask is {ratio:.3g}x the reference mask's share of the image")
            )
        assert stats.centroid is not None
        dx = stats.centroid[0] - reference.centroid[0]
        dy = stats.centroid[1] - reference.centroid[1]
        distance = float(np.hypot(dx, dy))
        if distance > thresholds.centroid_drift:
            flags.append(
                (FLAG_CENTROID_DRIFT, f"the centroid moved {distance:.2f} (of the image) from the reference")
            )
    return flags
