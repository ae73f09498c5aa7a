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


@pytest.mark.django_db
def test_health_follows_the_background_preload(client, use_tiny_sam, settings, monkeypatch):
    """SAM_PRELOAD: /health says "loading" while the model builds in the background, then "loaded"."""
    import threading

    from datasets.segmentation import app_segmenter, start_preload
    from imaging import sam

    gate = threading.Event()
    real = sam.SamSegmenter

    class GatedSegmenter(real):
        def __init__(self, *args, **kwargs):
            assert gate.wait(60), "the test never opened the gate"
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sam, "SamSegmenter", GatedSegmenter)
    settings.SAM_PRELOAD = False
    assert start_preload() is None
    assert client.get("/health").json()["model_state"] == "not_loaded"

    settings.SAM_PRELOAD = True
    thread = start_preload()
    assert thread is not None and start_preload() is thread  # one preload per process and model
    body = client.get("/health").json()
    assert (body["model_state"], body["sam_loaded"], body["model_error"]) == ("loading", False, None)
    gate.set()
    thread.join(60)
    body = client.get("/health").json()
    assert (body["model_state"], body["sam_loaded"], body["model"]) == ("loaded", True, "custom")
    assert isinstance(app_segmenter(), GatedSegmenter)  # the first request finds the preloaded model
    assert start_preload() is None  # nothing left to load


@pytest.mark.django_db
def test_health_reports_a_failed_preload_with_its_reason(client, settings, tmp_path):
    broken = tmp_path / "models" / "sam_broken.pth"
    broken.parent.mkdir()
    broken.write_bytes(b"not a checkpoint at all")
    settings.SAM_BACKEND = "sam"
    settings.SAM_CHECKPOINT = str(broken)
    settings.SAM_PRELOAD = True
    from datasets.segmentation import start_preload

    start_preload().join(60)
    body = client.get("/health").json()
    assert body["model_state"] == "error" and body["sam_loaded"] is False
    assert "sam_broken.pth" in body["model_error"] and str(tmp_path) not in body["model_error"]
    assert body["status"] == "degraded"  # the app still serves (200); the model state says what is wrong


@pytest.mark.django_db
def test_health_model_state_without_weights(client, settings, tmp_path):
    assert client.get("/health").json()["model_state"] == "loaded"  # classical: nothing to load
    settings.SAM_BACKEND = "sam"  # required, but no checkpoint anywhere
    body = client.get("/health").json()
    assert body["model_state"] == "error" and "no checkpoint" in body["model_error"]
