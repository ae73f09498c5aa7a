"""Fixtures of the generation-job tests: datasets of real photos, event capture, runners."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fixtures.factories import DatasetFactory, store_image


@pytest.fixture
def make_photo_dataset(photo_png_160) -> Callable:
    """``make_photo_dataset(owner, names=..., filenames=...)``: a dataset of real photos in the given order."""

    def make(owner, names=("astronaut", "coffee", "camera", "chelsea"), filenames=None, name="Photos"):
        dataset = DatasetFactory(owner=owner, name=name)
        for position, photo in enumerate(names):
            filename = filenames[position] if filenames else f"{photo}.png"
            store_image(dataset, filename, photo_png_160[photo], position=position)
        return dataset

    return make


@pytest.fixture
def photo_dataset(alice, make_photo_dataset):
    return make_photo_dataset(alice)


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
