"""Fixtures for driving the seed-compatible API the way the old clients did (helpers: tests.fixtures.seed_api)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.images import image_bytes


@pytest.fixture(scope="session")
def photo_files(photo_arrays_192) -> dict[str, bytes]:
    """Upload files named the way users name them: the class comes from the filename."""
    return {
        "astronaut_pass.png": image_bytes(photo_arrays_192["astronaut"]),
        "coffee_fail.png": image_bytes(photo_arrays_192["coffee"]),
        "chelsea.png": image_bytes(photo_arrays_192["chelsea"]),
        "camera.png": image_bytes(photo_arrays_192["camera"]),
    }


@pytest.fixture
def originals(photo_files) -> dict[str, np.ndarray]:
    return {
        name: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for name, data in photo_files.items()
    }


@pytest.fixture
def encode_gate(settings):
    """Blocks the segmenter's encoder from its ``blocked_from``-th call until ``release()``.

    It wraps the process's segmenter instance, so it holds a job running in the embedded runner's thread.
    """
    from datasets.segmentation import app_segmenter

    segmenter = app_segmenter()
    original = segmenter.encode

    class Gate:
        blocked_from = 3
        calls = 0
        opened = threading.Event()
        waiting = threading.Event()

        def release(self):
            self.opened.set()

    gate = Gate()
    lock = threading.Lock()

    def encode(rgb):
        with lock:
            gate.calls += 1
            number = gate.calls
        if number >= gate.blocked_from:
            gate.waiting.set()
            assert gate.opened.wait(60), "encode gate never released"
        return original(rgb)

    segmenter.encode = encode
    yield gate
    gate.release()
    segmenter.encode = original
