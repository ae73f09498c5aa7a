"""Fixtures and helpers for driving the seed-compatible API the way the old clients did."""

from __future__ import annotations

import io
import json
import threading

import cv2
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

PREFIXES = ("/sam", "/api/sam")


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(name: str, data: bytes, content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def post_json(client, url: str, body, **extra):
    return client.post(url, data=json.dumps(body), content_type="application/json", **extra)


def b64_image(text: str) -> Image.Image:
    """Decode a base64 image answer; refuses a ``data:`` prefix (the contract says none)."""
    import base64

    assert not text.startswith("data:")
    image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
    image.load()
    return image


def b64_rgb(text: str) -> np.ndarray:
    return np.asarray(b64_image(text).convert("RGB"))


def b64_mask(text: str) -> np.ndarray:
    """A mask answer as bool, checking it is a single-channel 0/255 PNG."""
    image = b64_image(text)
    assert image.format == "PNG" and image.mode == "L"
    values = np.asarray(image)
    assert set(np.unique(values).tolist()) <= {0, 255}
    return values == 255


def parse_sse(raw: bytes) -> list:
    """The ``data:`` payloads of an SSE body, JSON-decoded ("[DONE]" kept as the string)."""
    events = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def read_stream(response) -> bytes:
    """The whole body of a (sync client) streaming response."""
    assert response["Content-Type"].startswith("text/event-stream")
    return b"".join(response)


def changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=-1)


@pytest.fixture(scope="session")
def small_photos(photos) -> dict[str, np.ndarray]:
    """The real photos scaled to a longest side of 192 px: same content, fast classical segmentation."""
    scaled = {}
    for name, array in photos.items():
        height, width = array.shape[:2]
        scale = 192 / max(height, width)
        size = (round(width * scale), round(height * scale))
        scaled[name] = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
    return scaled


@pytest.fixture(scope="session")
def photo_files(small_photos) -> dict[str, bytes]:
    """Upload files named the way users name them: the class comes from the filename."""
    return {
        "astronaut_pass.png": png_bytes(small_photos["astronaut"]),
        "coffee_fail.png": png_bytes(small_photos["coffee"]),
        "chelsea.png": png_bytes(small_photos["chelsea"]),
        "camera.png": png_bytes(small_photos["camera"]),
    }


@pytest.fixture
def originals(photo_files) -> dict[str, np.ndarray]:
    return {
        name: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for name, data in photo_files.items()
    }


def init_dataset(client, photo_files, prefix: str = "/sam", names=None) -> dict:
    names = names or list(photo_files)
    response = client.post(
        f"{prefix}/dataset/init",
        {"images": [upload(name, photo_files[name]) for name in names]},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    return response.json()


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


@pytest.fixture
def embedded_runner(settings):
    """The production runner (a worker thread in this process), stopped after the test."""
    from datasets.jobs.runners import get_runner

    settings.JOB_RUNNER = "embedded"
    runner = get_runner("embedded")
    yield runner
    runner.stop(timeout=30)
