"""Deploying: ``migrate`` alone makes a working database; DEBUG is off by default; production settings.

Each case runs Django in a fresh process with a chosen environment, as an operator would start it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "samsite.settings",
            "VAR_DIR": str(tmp_path),
            "MEDIA_ROOT": str(tmp_path / "media"),
            "EMBED_CACHE_DIR": str(tmp_path / "embeddings"),
            "DECODED_CACHE_DIR": str(tmp_path / "decoded"),
            "SAM_BACKEND": "classical",
            "JOB_RUNNER": "inline",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.pop("REDIS_URL", None)  # the database cache is the one that needs a table
    env.update(extra)
    return env


def _run(args, env, timeout=300):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _settings_of(tmp_path, names: list[str], **extra):
    script = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n, None) for n in {names!r}}}))"
    )
    return _run(["-c", script], _env(tmp_path, **extra), timeout=120)


@pytest.fixture
def fresh_database():
    """An empty PostgreSQL database next to the test one, dropped afterwards."""
    db = django_settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL")
    name = f"samgen_deploy_{uuid.uuid4().hex[:10]}"
    params = {"host": db["HOST"] or None, "port": db["PORT"] or None, "user": db["USER"] or None}
    if db["PASSWORD"]:
        params["password"] = db["PASSWORD"]
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    yield f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrate_alone_makes_a_database_that_uploads_templates_runs_and_downloads(tmp_path, fresh_database):
    env = _env(
        tmp_path,
        DATABASE_URL=fresh_database,
        SECRET_KEY="deploy-test-" + uuid.uuid4().hex,
        # A production process behind TLS: plain test-client requests must not be redirected.
        SECURE_SSL_REDIRECT="false",
        SECURE_COOKIES="false",
    )
    migrated = _run(["manage.py", "migrate", "--noinput"], env)
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    flow = _run([str(Path(__file__).with_name("deploy_flow.py"))], env)

    assert flow.returncode == 0, flow.stdout[-2000:] + flow.stderr[-3000:]
    steps = json.loads(flow.stdout.strip().splitlines()[-1])
    assert steps == {
        "dataset": 201,
        "upload": 201,
        "uploaded": 2,
        "seed_init": 200,
        "template": 201,
        "job": 202,
        "job_status": "succeeded",
        "download": 200,
        "zip_images": 2,
    }


def test_debug_is_off_by_default_with_production_security_settings(tmp_path):
    names = [
        "DEBUG",
        "SECURE_HSTS_SECONDS",
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_PROXY_SSL_HEADER",
        "SECURE_CONTENT_TYPE_NOSNIFF",
    ]
    result = _settings_of(tmp_path, names, SECRET_KEY="x" * 50)

    assert result.returncode == 0, result.stderr[-2000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == {
        "DEBUG": False,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_PROXY_SSL_HEADER": None,  # opt-in: trusting the header without a proxy would be spoofable
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
    }


def test_the_proxy_ssl_header_and_hsts_come_from_the_environment(tmp_path):
    result = _settings_of(
        tmp_path,
        ["SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_SECONDS"],
        SECRET_KEY="x" * 50,
        TRUST_X_FORWARDED_PROTO="true",
        SECURE_HSTS_SECONDS="600",
    )

    assert result.returncode == 0, result.stderr[-2000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == {
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_HSTS_SECONDS": 600,
    }


def test_debug_on_refuses_a_non_local_allowed_host(tmp_path):
    refused = _settings_of(tmp_path, ["DEBUG"], DEBUG="true", ALLOWED_HOSTS="127.0.0.1,gen.example.com")
    local = _settings_of(tmp_path, ["DEBUG"], DEBUG="true", ALLOWED_HOSTS="127.0.0.1,localhost,[::1]")

    assert refused.returncode != 0
    assert "ALLOWED_HOSTS names non-local hosts (gen.example.com)" in refused.stderr
    assert local.returncode == 0, local.stderr[-2000:]
    assert json.loads(local.stdout.strip().splitlines()[-1]) == {"DEBUG": True}


def test_the_decoded_cache_lives_under_var_dir_by_default_and_zero_turns_it_off(tmp_path):
    script = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([str(s.DECODED_CACHE_DIR), s.DECODED_CACHE_MB]))"
    )
    default = _run(["-c", script], _env(tmp_path, SECRET_KEY="x" * 50, DECODED_CACHE_DIR=""))
    off = _run(["-c", script], _env(tmp_path, SECRET_KEY="x" * 50, DECODED_CACHE_MB="0"))
    refused = _run(["-c", script], _env(tmp_path, SECRET_KEY="x" * 50, DECODED_CACHE_MB="-1"))

    assert default.returncode == 0, default.stderr[-2000:]
    assert json.loads(default.stdout.strip().splitlines()[-1]) == [str(tmp_path / "decoded"), 2048]
    assert off.returncode == 0, off.stderr[-2000:]
    assert json.loads(off.stdout.strip().splitlines()[-1])[1] == 0
    assert refused.returncode != 0 and "DECODED_CACHE_MB must be >= 0" in refused.stderr


def test_make_run_sets_debug_explicitly_and_needs_no_createcachetable():
    run_target = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]

    assert "createcachetable" not in run_target
    assert "DEBUG=true $(PY) manage.py runserver" in run_target
