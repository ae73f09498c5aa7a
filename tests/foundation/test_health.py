"""/health answers on PostgreSQL (the suite's database) and on the embedded SQLite default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_health_reports_database_and_backend_without_loading_a_model(client, settings):
    response = client.get("/health")
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["backend"] == "classical"
    assert body["sam_loaded"] is False
    assert body["device"] in {"cpu", "cuda"}


@pytest.mark.django_db
def test_health_with_a_sam_checkpoint_does_not_load_it(client, use_tiny_sam):
    body = client.get("/health").json()
    assert body["backend"] == "sam"
    assert body["sam_loaded"] is False


def test_health_answers_on_the_embedded_sqlite_default(tmp_path):
    """A fresh process with no DATABASE_URL migrates its SQLite file and answers /health."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update({"VAR_DIR": str(tmp_path), "SAM_BACKEND": "classical", "TESTING": "1"})
    script = (
        "import django, json; django.setup();"
        "from django.core.management import call_command; call_command('migrate', verbosity=0);"
        "from django.test import Client; from django.db import connection;"
        "r = Client().get('/health'); print(json.dumps({'vendor': connection.vendor, **r.json()}))"
    )
    env["DJANGO_SETTINGS_MODULE"] = "samsite.settings"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    body = json.loads(result.stdout.strip().splitlines()[-1])
    assert body["vendor"] == "sqlite"
    assert body["database"] == "ok"
    assert (tmp_path / "db.sqlite3").exists()


def test_settings_refuse_debug_off_without_a_secret_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update({"DEBUG": "false", "VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "samsite.settings"})
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_settings_reject_a_malformed_boolean(tmp_path):
    env = dict(os.environ, DEBUG="ture", VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="samsite.settings")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr
