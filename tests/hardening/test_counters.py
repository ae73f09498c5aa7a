"""Atomic shared counters (``samsite.common.counters``) and the limits on them: the SSE cap, the login
lockout and the throttles hold under parallel requests (threads released together by a barrier), and keep
their expiry."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from samsite.common import counters
from tests.fixtures.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 24


def _parallel(fn, n: int = THREADS) -> list:
    """Run ``fn(i)`` in ``n`` threads released at once; returns the results (exceptions as values)."""
    from django.conf import settings
    from django.db import connection

    if not settings.REDIS_URL and connection.vendor == "sqlite" and connection.is_in_memory_db():
        # The test database of SQLite is an in-memory shared cache, whose table locks fail at once instead of
        # waiting; the file database that runs (WAL, a busy timeout) serialises the upserts.
        pytest.skip("parallel writes need PostgreSQL or a file SQLite database")
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except Exception as exc:
            results[i] = exc
        finally:
            from django.db import connections

            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.fixture(params=["database", "redis"])
def backend(request, settings):
    if request.param == "redis":
        import redis

        url = "redis://127.0.0.1:6379/15"
        try:
            redis.Redis.from_url(url).ping()
        except Exception:
            pytest.skip("no local Redis")
        settings.REDIS_URL = url
        yield "redis"
        client = redis.Redis.from_url(url)
        for key in client.scan_iter("samgen:counter:test-*"):
            client.delete(key)
    else:
        settings.REDIS_URL = None
        yield "database"


def test_parallel_increments_each_get_their_own_count(backend):
    key = f"test-{uuid.uuid4().hex}"

    results = _parallel(lambda i: counters.counter_add(key, ttl=60))

    assert sorted(results) == list(range(1, THREADS + 1))
    assert counters.counter_get(key) == THREADS


def test_a_counter_keeps_its_expiry_and_restarts_after_it(backend, monkeypatch):
    key = f"test-{uuid.uuid4().hex}"
    counters.counter_add(key, ttl=900)
    counters.counter_add(key, ttl=900)

    assert counters.counter_expires_in(key) > 800  # not reset to a 300 s default by the second increment
    assert counters.counter_subtract(key) == 1
    assert counters.counter_subtract(key, 5) == 0  # never below zero
    if backend == "database":
        now = time.time()
        monkeypatch.setattr(counters, "_now", lambda: now + 901)
        assert counters.counter_get(key) == 0
        assert counters.counter_add(key, ttl=900) == 1  # an expired window restarts
        assert counters.counter_subtract(f"test-{uuid.uuid4().hex}") is None


def test_parallel_streams_get_exactly_the_cap(backend, settings):
    from datasets.jobs.events import TooManyStreams, stream_slot_acquire, stream_slot_release

    settings.SSE_MAX_CONNECTIONS_PER_USER = 5
    user = UserFactory()

    results = _parallel(lambda i: stream_slot_acquire(user))

    assert sum(result is None for result in results) == 5
    assert all(isinstance(result, TooManyStreams) for result in results if result is not None)
    for _ in range(5):
        stream_slot_release(user)
    stream_slot_acquire(user)  # every slot came back
    stream_slot_release(user)


def test_parallel_wrong_passwords_check_at_most_the_limit(settings, monkeypatch):
    from django.contrib.auth import authenticate
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.test import RequestFactory

    settings.LOGIN_FAILURE_LIMIT = 3
    UserFactory(username="carol")
    checks = []
    original = AbstractBaseUser.check_password

    def counting(self, raw):
        checks.append(raw)
        return original(self, raw)

    monkeypatch.setattr(AbstractBaseUser, "check_password", counting)

    def attempt(i):
        request = RequestFactory().post("/accounts/login/", REMOTE_ADDR="10.1.1.1")
        return authenticate(request, username="carol", password=f"wrong-{i}")

    results = _parallel(attempt)

    assert results == [None] * THREADS
    assert len(checks) == 3
    request = RequestFactory().post("/accounts/login/", REMOTE_ADDR="10.1.1.1")
    assert authenticate(request, username="carol", password=PASSWORD) is None  # locked, right password too


def test_the_lockout_lasts_as_long_as_it_says(settings):
    from rest_framework.test import APIClient

    settings.LOGIN_FAILURE_LIMIT = 2
    settings.LOGIN_LOCKOUT_SECONDS = 900
    UserFactory(username="dora")
    client = APIClient()
    for _ in range(2):
        client.post("/api/auth/token/", {"username": "dora", "password": "x"}, format="json")

    locked = client.post("/api/auth/token/", {"username": "dora", "password": PASSWORD}, format="json")

    assert locked.status_code == 429 and locked.json()["retry_after"] > 800
    rows = counters.Counter.objects.filter(key__startswith="login-fail:pair:")
    assert rows.count() == 1 and rows.get().expires_at - time.time() > 800


def test_a_username_failing_from_many_ips_is_locked_out(settings):
    from rest_framework.test import APIClient

    settings.LOGIN_FAILURE_LIMIT = 1
    UserFactory(username="erik")
    client = APIClient()
    for i in range(4):  # 4x the limit, each from another address
        client.post(
            "/api/auth/token/",
            {"username": "erik", "password": "x"},
            format="json",
            REMOTE_ADDR=f"10.2.0.{i}",
        )

    fresh_ip = client.post(
        "/api/auth/token/", {"username": "erik", "password": PASSWORD}, format="json", REMOTE_ADDR="10.3.3.3"
    )

    assert fresh_ip.status_code == 429 and fresh_ip.json()["error"] == "locked_out"


def test_parallel_requests_get_exactly_the_throttle_rate(settings, monkeypatch):
    from django.test import RequestFactory

    from samsite.common import throttles

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"login": "4/min"}}
    from rest_framework.settings import api_settings

    api_settings.reload()

    def attempt(i):
        request = RequestFactory().post("/api/auth/token/", REMOTE_ADDR="10.4.4.4")
        return throttles.ScopeThrottle(throttles.LOGIN).allow_request(request, None)

    try:
        results = _parallel(attempt)
    finally:
        api_settings.reload()

    assert results.count(True) == 4 and results.count(False) == THREADS - 4


def test_prune_deletes_expired_counters(settings, monkeypatch):
    from django.core.management import call_command

    settings.REDIS_URL = None
    counters.counter_add("test-live", ttl=600)
    counters.counter_add("test-old", ttl=1)
    now = time.time()
    monkeypatch.setattr(counters, "_now", lambda: now + 5)

    call_command("prune", "--days", "30")

    assert set(counters.Counter.objects.values_list("key", flat=True)) == {"test-live"}
