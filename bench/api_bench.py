"""Dataset API benchmarks (not tests): segment-preview latency and bulk-upload throughput and memory.

1. Segment preview with a cached embedding, through the REST endpoint and through the service alone, one
   torch thread, medians. The SAM prompt encoder and mask decoder are the same for every SAM size (256-dim,
   2-layer two-way transformer), so the tiny checkpoint measures exactly the vit_b decoder cost. Baseline:
   the naive preview that re-decodes the image and re-runs the encoder every time (no cache); with --vit-b
   the baseline encoder is a random-weight vit_b (~375 MB written to a temp dir; slow on a CPU).
2. Upload of N images of 2048x1536 through POST /api/datasets/{id}/images/ (Django test client, 10 files per
   request): seconds per 10 images, and resident memory after each batch (flat = nothing accumulates).
   Reference: the time just to decode the same files once, the floor of any upload that validates images.

Run from the repository root (a PostgreSQL DATABASE_URL gives production-like numbers; without one a
temporary SQLite file is used)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/samgen .venv/bin/python bench/api_bench.py [--vit-b]

Everything it creates (test database, media, embedding cache, checkpoints) is temporary and removed at
the end; it writes nothing into the repository.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _configure(tmp: Path) -> None:
    os.environ.update(
        VAR_DIR=str(tmp),
        MEDIA_ROOT=str(tmp / "media"),
        EMBED_CACHE_DIR=str(tmp / "embeddings"),
        JOB_RUNNER="inline",
        SAM_BACKEND="classical",
        THROTTLE_UPLOADS="1000000/min",
        THROTTLE_PREVIEWS="1000000/min",
        LOG_LEVEL="WARNING",
    )
    # DEBUG stays off (production settings); they refuse to start without a key.
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
    os.environ.setdefault("SECURE_SSL_REDIRECT", "false")  # the test client speaks plain HTTP
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "samsite.settings")
    sys.path.insert(0, str(REPO))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KB on Linux


def _photo(index: int, width: int = 2048, height: int = 1536):
    """A distinct, photo-like 2048x1536 image: a scikit-image sample, resized, with an index-dependent tint."""
    import cv2
    import numpy as np
    from skimage import data

    samples = (data.astronaut, data.coffee, data.chelsea, data.rocket)
    base = samples[index % len(samples)]()
    rgb = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    tint = np.array([index % 7, (index // 7) % 7, index % 5], dtype=np.int16) - 3
    return np.clip(rgb.astype(np.int16) + tint, 0, 255).astype(np.uint8)


def _png(rgb) -> bytes:
    from imaging.codecs import encode_image

    return encode_image(rgb, "png")


def bench_preview(client, user, tmp: Path, *, runs: int, vit_b: bool, size: tuple[int, int]) -> None:
    import numpy as np
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import override_settings

    from datasets.segmentation import app_segmenter, embedding_cache
    from datasets.services.datasets import dataset_create
    from datasets.services.previews import recent_embeddings, segment_preview
    from datasets.services.uploads import images_upload
    from imaging.points import Point, denormalize
    from imaging.registry import reset_segmenters
    from imaging.tiny_sam import build_tiny_sam_checkpoint, build_vit_b_random_checkpoint

    dataset = dataset_create(owner=user, name="preview bench")
    image = images_upload(dataset=dataset, files=[SimpleUploadedFile("photo.png", _png(_photo(0)))]).created[
        0
    ]
    rng = np.random.default_rng(0)
    prompts = [
        [
            {"x_norm": float(x), "y_norm": float(y), "positive": bool(i == 0 or rng.random() > 0.3)}
            for i, (x, y) in enumerate(rng.uniform(0.05, 0.95, (int(rng.integers(1, 4)), 2)))
        ]
        for _ in range(runs)
    ]
    url = f"/api/images/{image.id.hex}/segment/"

    import torch

    threads = torch.get_num_threads()
    print(
        f"\n== 1. segment preview, cached embedding, {threads} torch threads ({size[0]}x{size[1]} image) =="
    )
    checkpoint = build_tiny_sam_checkpoint(tmp / "sam_tiny.pth")
    with override_settings(SAM_BACKEND="sam", SAM_CHECKPOINT=str(checkpoint)):
        reset_segmenters()
        segmenter = app_segmenter()
        first = client.post(url, {"points": prompts[0]}, format="json")
        assert first.status_code == 200 and first.json()["cached"] is False, first.content
        api, service, decoder = [], [], []
        for points in prompts:
            started = time.perf_counter()
            response = client.post(url, {"points": points}, format="json")
            api.append(time.perf_counter() - started)
            assert response.status_code == 200 and response.json()["cached"] is True
            parsed = [Point(p["x_norm"], p["y_norm"], p["positive"]) for p in points]
            started = time.perf_counter()
            segment_preview(image=image, points=parsed)
            service.append(time.perf_counter() - started)
        embedding = embedding_cache().get(image.sha256, segmenter.fingerprint)
        for points in prompts:
            coords, labels = denormalize(
                [Point(p["x_norm"], p["y_norm"], p["positive"]) for p in points], image.width, image.height
            )
            started = time.perf_counter()
            segmenter.predict(embedding, coords, labels)
            decoder.append(time.perf_counter() - started)
        disk = []
        for points in prompts[: max(5, runs // 3)]:
            recent_embeddings.clear()  # another worker process: only the disk cache is shared
            started = time.perf_counter()
            client.post(url, {"points": points}, format="json")
            disk.append(time.perf_counter() - started)
        assert segmenter.encode_calls == 1
        print(f"decoder only (prompt encoder + mask decoder + upscale)  median {_ms(_median(decoder))}")
        print(f"segment_preview service (memory-cached embedding)       median {_ms(_median(service))}")
        print(
            f"POST {url[:12]}.../segment/ end to end (JSON, 3 PNG masks) median {_ms(_median(api))}"
            f"   p90 {_ms(sorted(api)[int(0.9 * len(api))])}"
        )
        print(f"  same, embedding read from the disk cache              median {_ms(_median(disk))}")
        naive_tiny = _naive(image, prompts[:3], segmenter, recent_embeddings, embedding_cache)
        print(
            f"naive (decode + tiny encoder + predict each time)       median {_ms(_median(naive_tiny))}"
            f"   ratio {_median(naive_tiny) / _median(api):5.1f}x"
        )

    if vit_b:
        checkpoint = build_vit_b_random_checkpoint(tmp / "sam_vit_b.pth")
        with override_settings(SAM_BACKEND="sam", SAM_CHECKPOINT=str(checkpoint)):
            reset_segmenters()
            segmenter = app_segmenter()
            client.post(url, {"points": prompts[0]}, format="json")  # encode once
            vit_api = []
            for points in prompts:
                started = time.perf_counter()
                client.post(url, {"points": points}, format="json")
                vit_api.append(time.perf_counter() - started)
            naive = _naive(image, prompts[:3], segmenter, recent_embeddings, embedding_cache)
            print(f"vit_b checkpoint: POST .../segment/ cached             median {_ms(_median(vit_api))}")
            print(
                f"vit_b naive (decode + vit_b encoder + predict each time) median {_ms(_median(naive))}"
                f"   ratio {_median(naive) / _median(vit_api):5.1f}x"
            )
    reset_segmenters()


def _naive(image, prompts, segmenter, recent, cache) -> list[float]:
    from datasets.image_io import decode_stored_image
    from imaging.points import Point, denormalize

    times = []
    for points in prompts:
        recent.clear()
        cache().clear()
        started = time.perf_counter()
        decoded = decode_stored_image(image.file)
        embedding = segmenter.encode(decoded.rgb)
        coords, labels = denormalize(
            [Point(p["x_norm"], p["y_norm"], p["positive"]) for p in points], image.width, image.height
        )
        segmenter.predict(embedding, coords, labels)
        times.append(time.perf_counter() - started)
    return times


def bench_upload(client, user, *, images: int, batch: int) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets.services.datasets import dataset_create
    from imaging.codecs import decode_image

    dataset = dataset_create(owner=user, name="upload bench")
    url = f"/api/datasets/{dataset.id.hex}/images/"
    print(f"\n== 2. upload {images} PNG images of 2048x1536 through the API, {batch} per request ==")
    print(f"resident memory before: {_rss_mb():.0f} MB (peak so far {_peak_rss_mb():.0f} MB)")
    per_batch, decode_only, sizes = [], [], []
    for start in range(0, images, batch):
        files = [_png(_photo(start + i)) for i in range(min(batch, images - start))]
        sizes += [len(f) for f in files]
        started = time.perf_counter()
        for data in files:
            decode_image(data)
        decode_only.append(time.perf_counter() - started)
        uploads = [SimpleUploadedFile(f"img_{start + i:03d}.png", data) for i, data in enumerate(files)]
        del files
        gc.collect()
        started = time.perf_counter()
        response = client.post(url, {"images": uploads}, format="multipart")
        elapsed = time.perf_counter() - started
        assert response.status_code == 201 and response.json()["count"] == len(uploads), response.content[
            :300
        ]
        del uploads, response
        gc.collect()
        per_batch.append(elapsed)
        print(
            f"  images {start + 1:3d}-{start + batch:3d}: {elapsed:6.2f} s   rss {_rss_mb():6.0f} MB"
            f"   peak {_peak_rss_mb():6.0f} MB"
        )
    total = sum(per_batch)
    print(f"files: {statistics.mean(sizes) / 1e6:.1f} MB each on average")
    print(
        f"per 10 images: median {_median(per_batch) * 10 / batch:.2f} s, mean {total / images * 10:.2f} s"
        f"   ({images / total:.1f} images/s)"
    )
    print(
        f"decode-only floor per 10 images: {_median(decode_only) * 10 / batch:.2f} s"
        f"   (upload / decode = {_median(per_batch) / _median(decode_only):.2f}x)"
    )
    print(f"stored: {dataset.images.count()} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--preview-runs", type=int, default=30)
    parser.add_argument(
        "--vit-b", action="store_true", help="also time the naive baseline with a vit_b encoder"
    )
    parser.add_argument("--preview-size", default="2048x1536", help="WIDTHxHEIGHT of the previewed image")
    parser.add_argument("--skip-upload", action="store_true")
    parser.add_argument("--skip-preview", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (default: torch's, as the web process)"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="samgen-api-bench-"))
    _configure(tmp)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import setup_test_environment, teardown_test_environment
    from rest_framework.test import APIClient

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        print(
            f"database: {connection.vendor}; torch threads: {torch.get_num_threads()}; cpus: {os.cpu_count()}"
        )
        user = get_user_model().objects.create_user("bench")
        client = APIClient()
        client.force_authenticate(user)
        if not args.skip_preview:
            size = tuple(int(v) for v in args.preview_size.lower().split("x"))
            bench_preview(client, user, tmp, runs=args.preview_runs, vit_b=args.vit_b, size=size)
        if not args.skip_upload:
            bench_upload(client, user, images=args.images, batch=args.batch)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
