"""Fixtures for the imaging tests: real photos (scikit-image samples, no download) and a tiny SAM checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.coffee())


@pytest.fixture(scope="session")
def camera_rgb() -> np.ndarray:
    """scikit-image's grayscale "camera" photo, as an RGB array with R == G == B (an L upload decoded)."""
    from skimage import data

    gray = data.camera()
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    from imaging.tiny_sam import build_tiny_sam_checkpoint

    return build_tiny_sam_checkpoint(tmp_path_factory.mktemp("tiny-sam") / "sam_tiny.pth", seed=0)


@pytest.fixture(scope="session")
def tiny_sam(tiny_ckpt):
    """One SamSegmenter on the tiny checkpoint, shared (it is thread-safe and stateless between calls)."""
    from imaging.sam import SamSegmenter

    return SamSegmenter(tiny_ckpt, device="cpu")
