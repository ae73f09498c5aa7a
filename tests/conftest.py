"""Shared fixtures: isolated media and cache dirs, alice and bob with session and token clients, photos, the
embedded job runner, and waiting for a job's end.

Every set of test photos is defined here (full size, and the downscaled sets the slower suites use); the
helpers that build them are in ``tests.fixtures.images``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.fixtures.images import fitted_png, half_size_png, image_bytes, scaled_to_longest_side
from tests.fixtures.waiting import JobEnds

# Sync Playwright runs an event loop in the main thread; ORM calls from the test body are still safe there.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
# Processes that tests start (runners, management commands) run with DEBUG off, the default, which needs a key.
os.environ.setdefault("SECRET_KEY", "insecure-key-of-the-test-session-only")


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    """Every test gets its own media root, embedding and decoded caches, the inline runner and the classical backend."""
    # Django's default PBKDF2 costs ~1 s per user on this CPU; tests don't need a slow hash.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.EMBED_CACHE_DIR = tmp_path / "embeddings"
    settings.DECODED_CACHE_DIR = tmp_path / "decoded"
    settings.JOB_RUNNER = "inline"
    settings.SAM_BACKEND = "classical"
    settings.SAM_CHECKPOINT = None
    settings.SAM_MODELS_DIR = tmp_path / "no-models"
    # Most tests queue jobs freely; the per-user limits have tests of their own that lower these.
    settings.MAX_ACTIVE_JOBS_PER_USER = 1000
    settings.MAX_QUEUED_ITEMS_PER_USER = 100_000
    from imaging.registry import reset_segmenters

    reset_segmenters()
    yield
    reset_segmenters()


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory):
    """A tiny SAM-architecture checkpoint with deterministic random weights, loaded by the real loader."""
    from imaging.tiny_sam import build_tiny_sam_checkpoint

    return build_tiny_sam_checkpoint(tmp_path_factory.mktemp("sam") / "sam_tiny.pth")


@pytest.fixture
def use_tiny_sam(settings, tiny_sam_checkpoint):
    """Switch the app to the SAM backend on the tiny checkpoint."""
    from imaging.registry import reset_segmenters

    settings.SAM_BACKEND = "sam"
    settings.SAM_CHECKPOINT = str(tiny_sam_checkpoint)
    reset_segmenters()
    return tiny_sam_checkpoint


@pytest.fixture
def embedded_runner(settings):
    """The production runner (a worker thread in this process), stopped after the test."""
    from datasets.jobs.runners import get_runner

    settings.JOB_RUNNER = "embedded"
    runner = get_runner("embedded")
    yield runner
    runner.stop(timeout=30)


@pytest.fixture
def job_ends():
    """``job_ends.wait(job.id, timeout=...)`` waits for a job's ``done`` event, sent by whichever thread of this
    process ran it (``tests.fixtures.waiting.JobEnds``)."""
    from datasets.jobs.signals import job_event

    ends = JobEnds()
    job_event.connect(ends, dispatch_uid="tests-job-ends")
    yield ends
    job_event.disconnect(dispatch_uid="tests-job-ends")


def _make_user(username: str):
    from tests.fixtures.factories import UserFactory

    return UserFactory(username=username)


@pytest.fixture
def alice(db):
    return _make_user("alice")


@pytest.fixture
def bob(db):
    return _make_user("bob")


def _token_client(user):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def alice_api(alice):
    """alice through token authentication (as scripts use the API)."""
    return _token_client(alice)


@pytest.fixture
def bob_api(bob):
    return _token_client(bob)


@pytest.fixture
def alice_client(alice, client):
    """alice through a session cookie (as the web pages use the API)."""
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob):
    from django.test import Client

    other = Client()
    other.force_login(bob)
    return other


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photos from scikit-image's bundled samples (no download): colour and grayscale."""
    from skimage import data

    return {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "camera": data.camera(),
        "chelsea": data.chelsea(),
    }


@pytest.fixture(scope="session")
def photo_png(photos) -> dict[str, bytes]:
    """The same photos encoded as PNG files, as a user would upload them."""
    return {name: image_bytes(array) for name, array in photos.items()}


@pytest.fixture(scope="session")
def photo_png_160(photos) -> dict[str, bytes]:
    """The photos shrunk to fit 160 x 160, as PNG bytes: full-size photos make the classical backend slow in
    the generation-job tests."""
    return {name: fitted_png(array, 160) for name, array in photos.items()}


@pytest.fixture(scope="session")
def photo_png_half(photos) -> dict[str, bytes]:
    """The photos at half their width and height, as PNG bytes: faster segmentation in page tests."""
    return {name: half_size_png(array) for name, array in photos.items()}


@pytest.fixture(scope="session")
def photo_arrays_192(photos) -> dict[str, np.ndarray]:
    """The photos as arrays scaled to a longest side of 192 px: same content, fast classical segmentation
    (the seed-API tests upload them and compare their answers with them)."""
    return {name: scaled_to_longest_side(array, 192) for name, array in photos.items()}


def pytest_collection_modifyitems(config, items):
    """Run browser tests last: sync Playwright keeps an event loop running in the main thread for the rest
    of the session, and async tests (pytest-asyncio) cannot start their own loop after it."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
