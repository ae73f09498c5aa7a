"""Fixtures of the generation-job tests: datasets of real photos, templates, event capture, runners."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from django.core.files.base import ContentFile
from PIL import Image

from datasets.models import DatasetImage
from imaging.codecs import decode_image, sha256_hex
from imaging.pipeline import classify_filename
from tests.factories import DatasetFactory, TemplateFactory

#: Side of the downscaled photos most tests use (full-size photos make the classical backend slow).
SMALL_SIDE = 160


def store_image(dataset, filename: str, data: bytes, *, position: int | None = None) -> DatasetImage:
    """Store ``data`` as a DatasetImage the way an upload does: real width/height/sha256/grayscale/class."""
    decoded = decode_image(data)
    if position is None:
        position = dataset.images.count()
    return DatasetImage.objects.create(
        dataset=dataset,
        file=ContentFile(data, name=filename),
        original_filename=filename,
        filename=filename,
        width=decoded.width,
        height=decoded.height,
        size_bytes=len(data),
        sha256=sha256_hex(data),
        is_grayscale=decoded.is_grayscale,
        image_class=classify_filename(filename),
        position=position,
    )


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def small_photos(photos) -> dict[str, bytes]:
    """The real photos, downscaled to SMALL_SIDE on their long side, as PNG bytes."""
    out = {}
    for name, array in photos.items():
        image = Image.fromarray(array)
        image.thumbnail((SMALL_SIDE, SMALL_SIDE), Image.Resampling.LANCZOS)
        out[name] = _png(np.asarray(image))
    return out


@pytest.fixture
def make_photo_dataset(small_photos) -> Callable:
    """``make_photo_dataset(owner, names=..., filenames=...)``: a dataset of real photos in the given order."""

    def make(owner, names=("astronaut", "coffee", "camera", "chelsea"), filenames=None, name="Photos"):
        dataset = DatasetFactory(owner=owner, name=name)
        for position, photo in enumerate(names):
            filename = filenames[position] if filenames else f"{photo}.png"
            store_image(dataset, filename, small_photos[photo], position=position)
        return dataset

    return make


@pytest.fixture
def photo_dataset(alice, make_photo_dataset):
    return make_photo_dataset(alice)


def add_templates(dataset, count: int = 2, **overrides) -> list:
    """``count`` templates with distinct points and edits, in save order."""
    specs = [
        ({"x_norm": 0.5, "y_norm": 0.45, "positive": True}, {"brightness": 0.25, "hue": 40}),
        ({"x_norm": 0.3, "y_norm": 0.7, "positive": True}, {"contrast": 0.3, "saturation": 0.5}),
        ({"x_norm": 0.7, "y_norm": 0.3, "positive": True}, {"gamma": 0.5, "sharpen": 1.0}),
    ]
    templates = []
    for index in range(count):
        point, edits = specs[index % len(specs)]
        fields = {"dataset": dataset, "name": f"T{index + 1}", "points": [point], "default_edits": edits}
        fields.update(overrides)
        templates.append(TemplateFactory(**fields))
    return templates


class EventLog:
    """Job events as the ``job_event`` signal delivers them (after commit, same payload as the SSE data)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __call__(self, sender, job, event_type, payload, **kwargs) -> None:
        self.events.append((event_type, payload))

    def of(self, job) -> list[tuple[str, dict]]:
        return [(kind, data) for kind, data in self.events if data.get("job_id") == job.id.hex]

    def types(self, job) -> list[str]:
        return [kind if kind != "status" else f"status:{data['status']}" for kind, data in self.of(job)]


@pytest.fixture
def event_log():
    from datasets.jobs.signals import job_event

    log = EventLog()
    job_event.connect(log, dispatch_uid="tests-event-log")
    yield log
    job_event.disconnect(dispatch_uid="tests-event-log")


@pytest.fixture
def run_jobs(django_capture_on_commit_callbacks):
    """``with run_jobs():`` executes on-commit work (events, the inline runner) inside ``db`` tests."""

    def runner():
        return django_capture_on_commit_callbacks(execute=True)

    return runner


@pytest.fixture
def held_jobs(monkeypatch) -> list:
    """Jobs are created but not run: enqueue() only records the ids (for tests that run them by hand)."""
    held: list = []
    monkeypatch.setattr("datasets.jobs.runners.enqueue", held.append)
    return held
