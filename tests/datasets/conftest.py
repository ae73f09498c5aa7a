"""Fixtures of the dataset API tests: real image files in several formats, datasets of alice and bob."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.factories import DatasetFactory
from tests.fixtures.images import image_bytes


@pytest.fixture(scope="session")
def tiff16(photos) -> bytes:
    """A 16-bit grayscale TIFF (the camera photo scaled to 0..65535)."""
    wide = photos["camera"].astype(np.uint16) * 257
    return image_bytes(wide, "TIFF")


@pytest.fixture(scope="session")
def bmp8(photos) -> bytes:
    """An 8-bit grayscale BMP of the camera photo."""
    return image_bytes(photos["camera"], "BMP")


@pytest.fixture(scope="session")
def jpeg(photos) -> bytes:
    return image_bytes(photos["chelsea"], "JPEG", quality=90)


@pytest.fixture
def alice_dataset(alice):
    return DatasetFactory(owner=alice, name="Alice's parts")


@pytest.fixture
def bob_dataset(bob):
    return DatasetFactory(owner=bob, name="Bob's parts")
