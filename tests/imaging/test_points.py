"""Point prompt validation and denormalisation."""

from __future__ import annotations

import numpy as np
import pytest

from imaging.errors import PointValidationError
from imaging.points import Point, denormalize, parse_points


def test_parse_normalised_points():
    points = parse_points(
        [
            {"x_norm": 0.25, "y_norm": "0.5"},
            {"x_norm": 0, "y_norm": 1, "positive": False},
            {"x_norm": 1.0, "y_norm": 0.0, "positive": "false"},
            {"x_norm": 0.5, "y_norm": 0.5, "positive": 1},
            {"x_norm": 0.5, "y_norm": 0.5, "positive": "True"},
            {"x_norm": 0.5, "y_norm": 0.5, "positive": 0},
        ]
    )
    assert points[0] == Point(0.25, 0.5, True)
    assert points[1] == Point(0.0, 1.0, False)
    assert [p.positive for p in points] == [True, False, False, True, True, False]
    assert parse_points([]) == []


def test_parse_pixel_points_inverts_denormalize():
    points = parse_points(
        [{"x": 0, "y": 99}, {"x": "199", "y": 50, "positive": False}], units="px", width=200, height=100
    )
    assert points[0].x_norm == 0.0 and points[0].y_norm == 1.0
    assert points[1].x_norm == 1.0 and not points[1].positive
    coords, labels = denormalize(points, 200, 100)
    assert coords.tolist() == [[0.0, 99.0], [199.0, 50.0]]
    assert labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    "raw,index,text",
    [
        ([{"x_norm": 0.5, "y_norm": 0.5}, {"x_norm": 1.2, "y_norm": 0.5}], 1, "between 0 and 1"),
        ([{"x_norm": -0.01, "y_norm": 0.5}], 0, "between 0 and 1"),
        ([{"x_norm": float("nan"), "y_norm": 0.5}], 0, "finite"),
        ([{"x_norm": "inf", "y_norm": 0.5}], 0, "finite"),
        ([{"x_norm": True, "y_norm": 0.5}], 0, "boolean"),
        ([{"x_norm": "left", "y_norm": 0.5}], 0, "number"),
        ([{"y_norm": 0.5}], 0, "required"),
        ([{"x_norm": 0.5, "y_norm": 0.5}, {"x_norm": 0.5, "y_norm": 0.5}, "oops"], 2, "object"),
        ([{"x_norm": 0.5, "y_norm": 0.5, "positive": "maybe"}], 0, "positive"),
        ([{"x_norm": 0.5, "y_norm": 0.5, "positive": 2}], 0, "positive"),
    ],
)
def test_invalid_points_name_the_index(raw, index, text):
    with pytest.raises(PointValidationError) as info:
        parse_points(raw)
    assert info.value.index == index
    assert f"point {index}" in str(info.value) and text in str(info.value)


def test_pixel_points_out_of_range():
    with pytest.raises(PointValidationError, match="x must be between 0 and 9"):
        parse_points([{"x": 10, "y": 0}], units="px", width=10, height=10)
    with pytest.raises(ValueError):
        parse_points([{"x": 1, "y": 1}], units="px")


def test_denormalize_formula():
    points = [Point(0.0, 0.0), Point(1.0, 1.0, False), Point(0.5, 0.5), Point(0.333, 0.999)]
    coords, labels = denormalize(points, 101, 11)
    assert coords.dtype == np.float32 and labels.dtype == np.int32
    assert coords.shape == (4, 2)
    # x_px = clamp(round(x_norm * (w - 1)), 0, w - 1)
    assert coords.tolist() == [[0, 0], [100, 10], [50, 5], [round(0.333 * 100), round(0.999 * 10)]]
    assert labels.tolist() == [1, 0, 1, 1]
    empty_coords, empty_labels = denormalize([], 10, 10)
    assert empty_coords.shape == (0, 2) and empty_labels.shape == (0,)
