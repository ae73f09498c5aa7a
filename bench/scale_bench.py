"""Benchmark of scale-out and fairness (not a test): ``python bench/scale_bench.py [--images 40]``.

Needs PostgreSQL (several worker processes share it): ``--database-url`` (default the local server); it
creates a scratch database, migrates it, and drops it at the end. Workers are ``manage.py samworker --once``
processes (torch 1 thread each) on the tiny SAM model, claiming chunks exactly as the embedded and Celery
runners do.

1. Throughput of one N-image job with 1 and with 2 worker processes, and the ratio: wall time of the
   processes, and the job's own time from its first claim to its last item (without the processes' start and
   model load, which a long-running worker pays once).
2. How long bob's 3-image job waits behind alice's N-image job (queued first) with one worker: FIFO (oldest
   job first, ``JOB_SCHEDULING=fifo``) against the fair round-robin, in the same run; measured from the first
   claim of either job (the worker's start excluded) to bob's last item.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--side", type=int, default=512, help="longest side of the generated photos (px)")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    import psycopg

    base = args.database_url.rsplit("/", 1)[0]
    name = f"samgen_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    work = Path(tempfile.mkdtemp(prefix="samgen-scale-"))
    env = {
        **os.environ,
        "DATABASE_URL": f"{base}/{name}",
        "DEBUG": "true",
        "SECRET_KEY": "bench",
        "DJANGO_SETTINGS_MODULE": "samsite.settings",
        "VAR_DIR": str(work),
        "SAM_BACKEND": "sam",
        "JOB_RUNNER": "inline",
        "JOB_CHUNK_SIZE": "4",
        "OMP_NUM_THREADS": "1",
        "WORKER_TORCH_THREADS": "1",
    }
    try:
        from imaging.tiny_sam import build_tiny_sam_checkpoint

        env["SAM_CHECKPOINT"] = str(build_tiny_sam_checkpoint(work / "tiny.pth"))
        os.environ.update(env)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        results, processing = {}, {}
        for workers in (1, 2):
            job_id = _make_job("alice", args.images, f"throughput-{workers}", args.side)
            started = time.perf_counter()
            _run_workers(workers, env)
            elapsed = time.perf_counter() - started
            results[workers] = elapsed
            processing[workers] = _finished_at(job_id) - _started_at(job_id)
            print(
                f"{workers} worker(s): {args.images} images in {elapsed:.1f} s wall "
                f"({args.images / elapsed:.2f} images/s), {processing[workers]:.1f} s from the first claim "
                f"({args.images / processing[workers]:.2f} images/s)"
            )
            _check_done(job_id, args.images)
        print(
            f"throughput ratio 2 workers / 1 worker: {results[1] / results[2]:.2f}x wall, "
            f"{processing[1] / processing[2]:.2f}x from the first claim"
        )

        waits = {}
        for scheduling in ("fifo", "fair"):
            big = _make_job("alice", args.images, f"big-{scheduling}", args.side)
            small = _make_job("bob", 3, f"small-{scheduling}", args.side)
            _run_workers(1, {**env, "JOB_SCHEDULING": scheduling})
            first_claim = min(_started_at(big), _started_at(small))
            waits[scheduling] = _finished_at(small) - first_claim
            _check_done(big, args.images)
            print(
                f"{scheduling}: bob's 3-image job finished {waits[scheduling]:.1f} s after the worker's first "
                f"claim (alice's {args.images}-image job: {_finished_at(big) - first_claim:.1f} s)"
            )
        print(f"bob waits {waits['fifo'] / waits['fair']:.1f}x less with fair scheduling")
    finally:
        if "django" in sys.modules and sys.modules["django"].apps.apps.ready:
            from django.db import connections

            connections.close_all()
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _make_job(username: str, count: int, label: str, side: int):
    import io

    import numpy as np
    from django.contrib.auth import get_user_model
    from PIL import Image

    from datasets.jobs import runners
    from datasets.jobs.services import job_create
    from datasets.services.datasets import dataset_create
    from datasets.services.uploads import images_upload
    from templates_app.services import template_create

    user, _ = get_user_model().objects.get_or_create(username=username)
    dataset = dataset_create(owner=user, name=label)
    rng = np.random.default_rng(abs(hash(label)) % 2**32)
    files = []
    from django.core.files.uploadedfile import SimpleUploadedFile

    for index in range(count):
        buffer = io.BytesIO()
        noise = rng.integers(0, 255, (side * 3 // 4, side, 3), dtype=np.uint8)
        Image.fromarray(noise).save(buffer, format="PNG")
        files.append(SimpleUploadedFile(f"{label}-{index}.png", buffer.getvalue(), content_type="image/png"))
    images_upload(dataset=dataset, files=files)
    template_create(dataset=dataset, points=[{"x_norm": 0.5, "y_norm": 0.5, "positive": True}])
    original = runners.enqueue
    runners.enqueue = lambda job_id: None  # the worker processes run it
    try:
        return job_create(dataset=dataset, owner=user).id
    finally:
        runners.enqueue = original


def _run_workers(count: int, env: dict) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", "samworker", "--once"], cwd=REPO, env=env, stdout=subprocess.DEVNULL
        )
        for _ in range(count)
    ]
    for process in processes:
        process.wait()


def _check_done(job_id, count: int) -> None:
    from datasets.models import GenerationJob

    job = GenerationJob.objects.get(pk=job_id)
    assert job.status == "succeeded" and job.succeeded_items == count, (job.status, job.succeeded_items)


def _started_at(job_id) -> float:
    from datasets.models import GenerationJob

    return GenerationJob.objects.get(pk=job_id).started_at.timestamp()


def _finished_at(job_id) -> float:
    from datasets.models import GenerationJob

    return GenerationJob.objects.get(pk=job_id).finished_at.timestamp()


if __name__ == "__main__":
    main()
