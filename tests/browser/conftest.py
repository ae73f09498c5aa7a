"""Browser tests: Playwright (sync API) driving Debian's Chromium against a real ASGI server in a thread.

The server is uvicorn running ``samsite.asgi.application`` on a free loopback port, in this process, so it
shares the test database (``transactional_db``: rows are committed and visible to its threads), the
settings, and django-eventstream's in-process listeners: events sent by the embedded job runner's thread
reach the browser's SSE connection. Never run ``playwright install``: the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
import uvicorn

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_collection_modifyitems(config, items):
    if not os.path.exists(CHROMIUM):
        skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing (run scripts/ensure-chromium.sh)")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1440, "height": 900}, "accept_downloads": True}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, url: str):
        self.url = url

    def __call__(self, path: str = "/") -> str:
        return self.url + path


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, setting ``startup_over`` once its startup has ended: listening (``started``) or
    failed, so a test neither polls for it nor waits out a timeout on a server that cannot start."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_over = threading.Event()

    async def startup(self, sockets=None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.startup_over.set()


@pytest.fixture
def live_asgi(transactional_db, settings):
    """A real ASGI server (uvicorn, lifespan off) with the embedded job runner; stopped at teardown."""
    from datasets.jobs import runners as runner

    settings.JOB_RUNNER = "embedded"
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    from samsite.asgi import application

    port = _free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = _AnnouncingServer(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    if not server.startup_over.wait(15) or not server.started:
        raise RuntimeError("uvicorn did not start")
    try:
        yield LiveServer(f"http://127.0.0.1:{port}")
    finally:
        embedded = runner.get_runner("embedded")
        embedded.stop(timeout=30)
        server.should_exit = True
        thread.join(timeout=10)
        _close_other_connections()


def _close_other_connections() -> None:
    """Server and runner threads keep idle connections to the test database; end them so the flush and the
    final DROP DATABASE do not wait for them (only this test database's other sessions)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def shoot():
    """``shoot(page, "name")`` saves a full-page screenshot to test-artifacts/screenshots/name.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, *, full_page: bool = True) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take
