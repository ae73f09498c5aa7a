"""Settings of the Celery runner: live events across processes need Redis, so JOB_RUNNER=celery takes the
eventstream Redis from REDIS_URL, else from a redis:// broker, and refuses to start without either."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from samsite.env import redis_connection_kwargs

_PRINT = "import json, samsite.settings as s; print(json.dumps(getattr(s, 'EVENTSTREAM_REDIS', None)))"


def _settings_of(**env) -> subprocess.CompletedProcess:
    """Load ``samsite.settings`` in a fresh interpreter with ``env`` (settings are read at import)."""
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL", "JOB_RUNNER")}
    return subprocess.run(
        [sys.executable, "-c", _PRINT],
        env={**base, "DEBUG": "true", "SECRET_KEY": "settings-test", **env},
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _events_redis(**env):
    result = _settings_of(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_celery_without_redis_url_takes_the_events_redis_from_its_redis_broker():
    derived = _events_redis(JOB_RUNNER="celery", CELERY_BROKER_URL="redis://:secret@broker.local:6380/3")
    assert derived == {"host": "broker.local", "port": 6380, "db": 3, "password": "secret"}
    # REDIS_URL, when set, wins; the embedded runner without REDIS_URL needs no Redis at all.
    assert _events_redis(
        JOB_RUNNER="celery", REDIS_URL="redis://cache.local:6379/1", CELERY_BROKER_URL="redis://b:6379/2"
    ) == {"host": "cache.local", "port": 6379, "db": 1}
    assert _events_redis(JOB_RUNNER="embedded") is None


def test_celery_with_a_non_redis_broker_and_no_redis_url_is_refused_at_settings_load():
    result = _settings_of(JOB_RUNNER="celery", CELERY_BROKER_URL="amqp://guest@rabbit.local//")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "JOB_RUNNER=celery needs Redis for live events across processes: set REDIS_URL" in result.stderr


def test_redis_urls_become_connection_keywords():
    assert redis_connection_kwargs("rediss://user:p%40ss@h:7000/5") == {
        "host": "h",
        "port": 7000,
        "db": 5,
        "username": "user",
        "password": "p@ss",
        "ssl": True,
    }
    with pytest.raises(ImproperlyConfigured):
        redis_connection_kwargs("amqp://h//")
