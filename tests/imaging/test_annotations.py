"""imaging.annotations: RLE, polygons with holes and parts, boxes, stability, quality flags."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from imaging.annotations import (
    FLAG_AREA_DRIFT,
    FLAG_CENTROID_DRIFT,
    FLAG_EMPTY,
    FLAG_WHOLE_IMAGE,
    QualityThresholds,
    mask_polygons,
    mask_stats,
    polygons_to_mask,
    quality_flags,
    rle_area,
    rle_bbox,
    rle_decode,
    rle_encode,
    stability_score,
    yolo_lines,
)


def _random_blobs(seed: int, shape=(90, 120)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, np.uint8)
    for _ in range(3):
        centre = (int(rng.integers(8, shape[1] - 8)), int(rng.integers(8, shape[0] - 8)))
        cv2.circle(m, centre, int(rng.integers(3, 25)), 1, -1)
    for _ in range(2):  # bites and holes
        centre = (int(rng.integers(8, shape[1] - 8)), int(rng.integers(8, shape[0] - 8)))
        cv2.circle(m, centre, int(rng.integers(2, 8)), 0, -1)
    return m.astype(bool)


def _from_yolo(lines: list[str], width: int, height: int) -> np.ndarray:
    """Rasterise label lines the way supervision's YOLO loader does (round, then fillPoly per line)."""
    import supervision as sv

    out = np.zeros((height, width), dtype=bool)
    for line in lines:
        values = np.array(line.split()[1:], dtype=np.float32).reshape(-1, 2) * [width, height]
        out |= sv.polygon_to_mask(np.round(values).astype(np.int32), resolution_wh=(width, height)).astype(
            bool
        )
    return out


@pytest.mark.parametrize("seed", range(12))
def test_rle_round_trips_exactly_and_matches_pycocotools(seed):
    mask = _random_blobs(seed)
    rle = rle_encode(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [90, 120]
    assert np.array_equal(rle_decode(rle), mask)
    assert rle_area(rle) == int(mask.sum())
    ys, xs = np.nonzero(mask)
    assert rle_bbox(rle) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["counts"].encode() == reference["counts"]


def test_an_empty_mask_has_an_empty_rle_and_no_polygon():
    mask = np.zeros((5, 7), dtype=bool)
    assert rle_area(rle_encode(mask)) == 0 and rle_bbox(rle_encode(mask)) == [0.0, 0.0, 0.0, 0.0]
    assert mask_polygons(mask) == [] and yolo_lines(mask, 0) == []


def test_simple_shapes_rasterise_back_exactly():
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:20, 4:30] = True  # a rectangle
    cv2.fillPoly(mask.view(np.uint8), [np.array([[35, 25], [48, 38], [30, 38]], np.int32)], 1)  # a triangle
    polygons = mask_polygons(mask)
    assert len(polygons) == 2 and all(len(p) >= 3 for p in polygons)
    assert np.array_equal(polygons_to_mask(polygons, width=50, height=40), mask)
    assert np.array_equal(_from_yolo(yolo_lines(mask, 3), 50, 40), mask)
    assert all(line.startswith("3 ") for line in yolo_lines(mask, 3))


def test_holes_are_preserved_in_one_bridged_polygon():
    mask = np.zeros((60, 60), dtype=bool)
    mask[5:55, 5:55] = True
    mask[15:25, 15:45] = False  # two holes
    mask[35:45, 20:30] = False
    mask[38:42, 23:27] = True  # an island inside the second hole: a part of its own
    polygons = mask_polygons(mask)
    assert len(polygons) == 2
    back = polygons_to_mask(polygons, width=60, height=60)
    assert np.array_equal(back, mask)
    assert not back[20, 30] and not back[36, 21] and back[40, 25]
    assert np.array_equal(_from_yolo(yolo_lines(mask, 0), 60, 60), mask)


def test_one_pixel_parts_and_lines_still_get_three_points():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2, 3] = True
    mask[7, 1:6] = True
    lines = yolo_lines(mask, 1)
    assert len(lines) == 2 and all(len(line.split()) == 7 for line in lines)
    assert np.array_equal(_from_yolo(lines, 10, 10), mask)


@pytest.mark.parametrize("seed", range(12))
def test_random_masks_rasterise_back_with_iou_of_at_least_0_95(seed):
    mask = _random_blobs(seed)
    back = _from_yolo(yolo_lines(mask, 0), 120, 90)
    iou = np.count_nonzero(back & mask) / np.count_nonzero(back | mask)
    assert iou >= 0.95


def test_stability_score_is_the_iou_of_the_mask_at_two_thresholds():
    logits = np.array([[-2.0, -0.5, 0.5, 2.0], [3.0, 0.9, -0.9, 1.1]])
    # > +1: 2.0, 3.0, 1.1 (3 values); > -1: everything but -2.0 (7 values).
    assert stability_score(logits) == pytest.approx(3 / 7)
    assert stability_score(np.full((4, 4), -5.0)) == 0.0
    assert stability_score(np.full((4, 4), 5.0)) == 1.0


def test_sam_candidates_carry_a_stability_score(tiny_sam_checkpoint):
    from imaging.sam import SamSegmenter

    segmenter = SamSegmenter(tiny_sam_checkpoint, device="cpu")
    rgb = np.random.default_rng(0).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    embedding = segmenter.encode(rgb)
    candidates = segmenter.predict(embedding, np.array([[30, 20]]), np.array([1]))
    assert candidates and all(0.0 <= c.stability <= 1.0 for c in candidates)


def test_quality_flags_on_constructed_masks():
    limits = QualityThresholds(max_area_fraction=0.9, area_drift_ratio=4.0, centroid_drift=0.25)
    shape = (100, 100)
    reference = np.zeros(shape, bool)
    reference[40:60, 40:60] = True  # 4% of the image, centred
    ref = mask_stats(reference)
    assert ref.fraction == pytest.approx(0.04) and ref.centroid == pytest.approx((0.5, 0.5))

    def codes(mask):
        return [code for code, _ in quality_flags(mask_stats(mask), ref, limits)]

    assert codes(reference) == []
    assert codes(np.zeros(shape, bool)) == [FLAG_EMPTY]
    assert codes(np.ones(shape, bool)) == [FLAG_WHOLE_IMAGE, FLAG_AREA_DRIFT]
    small = np.zeros(shape, bool)
    small[48:52, 48:53] = True  # 20x smaller, same place: the missing pump cap
    assert codes(small) == [FLAG_AREA_DRIFT]
    moved = np.zeros(shape, bool)
    moved[0:20, 0:20] = True  # same size, in the corner
    assert codes(moved) == [FLAG_CENTROID_DRIFT]
    # Without a reference only the absolute checks run.
    assert [c for c, _ in quality_flags(mask_stats(small), None, limits)] == []
