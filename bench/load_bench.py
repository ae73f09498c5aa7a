"""Loopback load test (not a test): N concurrent users against uvicorn + PostgreSQL, for a bounded time.

    .venv/bin/python bench/load_bench.py [--users 20 --seconds 60 --database-url postgres://postgres@127.0.0.1:5432/postgres]

Creates a fresh database (``migrate`` only, as a deployment would), starts ``uvicorn samsite.asgi:application``
on a free 127.0.0.1 port (DEBUG off, embedded job runner, classical segmenter), creates the users and their
tokens, then each user loops until the time is up: create a dataset, upload 3 images, save a template,
segment, edit preview, create a job, stream its SSE events until ``done``, download the ZIP and list its
variants. Checked per job: the ZIP and the variants list hold exactly one variant per image, no duplicate,
none lost. Prints p50/p95 latency per endpoint, the error count and the lost/duplicated variants; drops the
database at the end. Loopback only; every request has a timeout; the run stops after --seconds (plus the
iterations in flight, each bounded by the request timeouts).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png(seed: int, width: int = 320, height: int = 240) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, seed % 256)], -1).astype(np.uint8)
    rgb[height // 4 : height // 2, width // 4 : width // 2] = rng.integers(150, 255, size=3)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.jobs = 0
        self.variants = 0
        self.lost = 0
        self.duplicated = 0

    def timed(self, name: str, call, *args, **kwargs):
        started = time.perf_counter()
        response = call(*args, **kwargs)
        with self.lock:
            self.latency[name].append((time.perf_counter() - started) * 1000)
        return response

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


def _check(response, expected: tuple[int, ...], what: str) -> dict:
    if response.status_code not in expected:
        raise RuntimeError(f"{what}: HTTP {response.status_code} {response.text[:200]}")
    return response.json() if "json" in response.headers.get("Content-Type", "") else {}


def _wait_done(session, base: str, job_id: str) -> dict:
    """Read the job's SSE stream until its ``done`` event (replayed from the start, so none is missed)."""
    url = f"{base}/api/jobs/{job_id}/events/?lastEventId=job-{job_id}:0"
    with session.get(url, stream=True, timeout=TIMEOUT, headers={"Accept": "text/event-stream"}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"events: HTTP {response.status_code}")
        event = None
        for raw in response.iter_lines(decode_unicode=True):
            if raw.startswith("event:"):
                event = raw.split(":", 1)[1].strip()
            elif raw.startswith("data:") and event == "done":
                return json.loads(raw.split(":", 1)[1])
    raise RuntimeError("events: the stream ended before done")


def user_loop(index: int, token: str, base: str, deadline: float, stats: Stats) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    iteration = 0
    while time.monotonic() < deadline:
        iteration += 1
        try:
            _iteration(session, base, stats, index, iteration)
        except Exception as exc:  # counted and reported, the loop goes on
            stats.error(f"user {index} iteration {iteration}: {exc}")


def _iteration(session, base: str, stats: Stats, index: int, iteration: int) -> None:
    def call(name: str, method: str, path: str, expected: tuple[int, ...], **kwargs) -> dict:
        response = stats.timed(name, session.request, method, base + path, timeout=TIMEOUT, **kwargs)
        return _check(response, expected, name)

    dataset = call("dataset create", "POST", "/api/datasets/", (201,), json={"name": f"u{index}-{iteration}"})
    files = [
        ("images", (f"img{n}.png", _png(index * 100_000 + iteration * 10 + n), "image/png")) for n in range(3)
    ]
    upload = call("upload (3 images)", "POST", f"/api/datasets/{dataset['id']}/images/", (201,), files=files)
    image_ids = [image["id"] for image in upload["created"]]
    point = {"x_norm": 0.35, "y_norm": 0.35, "positive": True}
    call(
        "template create",
        "POST",
        f"/api/datasets/{dataset['id']}/templates/",
        (201,),
        json={"points": [point], "default_edits": {"brightness": 0.2}},
    )
    call("segment", "POST", f"/api/images/{image_ids[0]}/segment/", (200,), json={"points": [point]})
    call(
        "edit preview",
        "POST",
        f"/api/datasets/{dataset['id']}/preview/",
        (200,),
        json={"image_id": image_ids[1]},
    )
    job = call("job create", "POST", f"/api/datasets/{dataset['id']}/jobs/", (201, 202), json={})
    done = stats.timed("SSE until done", _wait_done, session, base, job["id"])
    if done.get("status") != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {done}")
    download = stats.timed(
        "ZIP download", session.get, f"{base}/api/jobs/{job['id']}/download/", timeout=TIMEOUT
    )
    if download.status_code != 200:
        raise RuntimeError(f"download: HTTP {download.status_code}")
    names = [n for n in zipfile.ZipFile(io.BytesIO(download.content)).namelist() if n != "manifest.json"]
    variants = call("variants list", "GET", f"/api/jobs/{job['id']}/variants/", (200,))
    listed = variants.get("results", []) if isinstance(variants, dict) else variants
    listed_images = [variant["image_id"] for variant in listed]
    with stats.lock:
        stats.jobs += 1
        stats.variants += len(names)
        stats.lost += max(0, len(image_ids) - len(set(names))) + len(set(image_ids) - set(listed_images))
        stats.duplicated += (len(names) - len(set(names))) + (len(listed_images) - len(set(listed_images)))


def _database_url(base_url: str, name: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server (its role needs CREATEDB); a fresh database is made on it",
    )
    args = parser.parse_args()
    name = f"samgen_load_{uuid.uuid4().hex[:8]}"
    admin = urlsplit(args.database_url)
    connect = {
        "host": admin.hostname,
        "port": admin.port or 5432,
        "user": admin.username or "postgres",
        "dbname": "postgres",
        "autocommit": True,
    }
    if admin.password:
        connect["password"] = admin.password
    with psycopg.connect(**connect) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    tmp = Path(tempfile.mkdtemp(prefix="load-bench-"))
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(args.database_url, name),
        "DJANGO_SETTINGS_MODULE": "samsite.settings",
        "PYTHONPATH": str(ROOT),
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "SECRET_KEY": uuid.uuid4().hex * 2,
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_COOKIES": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "VAR_DIR": str(tmp),
        "SAM_BACKEND": "classical",
        "JOB_RUNNER": "embedded",
        "OMP_NUM_THREADS": "1",
        # The load is many users at a realistic per-user pace: per-user rates are not what is measured here.
        "THROTTLE_UPLOADS": "10000/min",
        "THROTTLE_PREVIEWS": "10000/min",
        "THROTTLE_JOBS": "10000/min",
    }
    env.pop("REDIS_URL", None)
    server = None
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        script = (
            "import django,json;django.setup();"
            "from django.contrib.auth import get_user_model;from rest_framework.authtoken.models import Token;"
            f"print(json.dumps([Token.objects.create(user=get_user_model().objects.create_user('load%d'%i, password=None)).key for i in range({args.users})]))"
        )
        tokens = json.loads(
            subprocess.run(
                [sys.executable, "-c", script], cwd=ROOT, env=env, check=True, capture_output=True, text=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "samsite.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--lifespan",
                "off",
            ],
            cwd=ROOT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        stats = Stats()
        started = time.monotonic()
        deadline = started + args.seconds
        threads = [
            threading.Thread(target=user_loop, args=(i, token, base, deadline, stats))
            for i, token in enumerate(tokens)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=args.seconds + 6 * TIMEOUT)
        elapsed = time.monotonic() - started
        print(
            f"{args.users} users, {elapsed:.0f} s: {stats.jobs} jobs, {stats.variants} variants in ZIPs, "
            f"{len(stats.errors)} errors, {stats.lost} lost, {stats.duplicated} duplicated"
        )
        print(f"{'endpoint':20} {'n':>6} {'p50 ms':>9} {'p95 ms':>9}")
        for endpoint, values in stats.latency.items():
            values = sorted(values)
            p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
            print(f"{endpoint:20} {len(values):6d} {statistics.median(values):9.0f} {p95:9.0f}")
        for text in stats.errors[:10]:
            print("error:", text)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        with psycopg.connect(**connect) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
