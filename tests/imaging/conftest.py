"""Fixtures for the imaging tests: single photos as arrays (from the root ``photos``) and a tiny SAM segmenter."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut(photos) -> np.ndarray:
    return np.array(photos["astronaut"], order="C")  # a copy: the tests here own their arrays


@pytest.fixture(scope="session")
def coffee(photos) -> np.ndarray:
    return np.array(photos["coffee"], order="C")


@pytest.fixture(scope="session")
def camera_rgb(photos) -> np.ndarray:
    """The grayscale "camera" photo as an RGB array with R == G == B (an L upload decoded)."""
    return np.ascontiguousarray(np.repeat(photos["camera"][:, :, None], 3, axis=2))


@pytest.fixture(scope="session")
def tiny_sam(tiny_sam_checkpoint):
    """One SamSegmenter on the tiny checkpoint, shared (it is thread-safe and stateless between calls)."""
    from imaging.sam import SamSegmenter

    return SamSegmenter(tiny_sam_checkpoint, device="cpu")
