"""Benchmark of dataset generation against the old tool's naive loop (not a test).

Run: ``python bench/generate_bench.py --checkpoint tiny|vit_b [--images N] [--templates T] [--size 512]``.

In one process, on the same images and templates (compose "each", so every run makes N x T variants):

(a) baseline, the old tool: per (image, template) ``SamPredictor.set_image`` + ``predict``, a naive float32
    edit over the whole image (every step on every pixel, then a masked composite), Pillow PNG at its
    default settings;
(b) our first run: a generation job through the real code path (services, inline runner, cold embedding
    cache): one encoder pass per image, masks for every template, bounding-box edits, OpenCV PNG, the
    decode/encode thread pool, database rows and events;
(c) our re-run with changed edits: a second job, warm cache, zero encoder calls.

Reports variants/s, encoder calls, per-stage time, per-variant (a) / per-image (b, c) medians, peak RSS per
phase, RSS along run (b) (to check it does not grow with the number of images), and the ratios b/a and c/b.
Everything lives in a temporary directory (SQLite database, media, cache, checkpoint): it writes nothing to
the repository. ``--skip-baseline`` runs (b) and (c) only (e.g. ``--images 200`` for the RSS check).
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RssSampler, create_bench_dataset, mb, naive_edit  # noqa: E402

EDITS_B = {"brightness": 0.15, "contrast": 0.2, "hue": 25, "saturation": 0.3, "sharpen": 0.8}
EDITS_C = {"brightness": -0.2, "gamma": 0.4, "hue": -40, "noise": 0.03}
POINTS = [(0.5, 0.45), (0.3, 0.7), (0.7, 0.3), (0.25, 0.25), (0.75, 0.75), (0.5, 0.8)]


def make_photos(count: int, size: int) -> list[np.ndarray]:
    """``count`` distinct real photos (scikit-image samples; flips and shifted crops beyond the first few)."""
    import cv2
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    sources.append(np.repeat(data.camera()[:, :, None], 3, axis=2))
    out = []
    for index in range(count):
        base = sources[index % len(sources)]
        variant = index // len(sources)
        h, w = base.shape[:2]
        side = min(h, w)
        shift = (variant * 17) % max(1, (max(h, w) - side) + 1)
        crop = base[:side, shift : shift + side] if w >= h else base[shift : shift + side, :side]
        if variant % 2:
            crop = crop[:, ::-1]
        resized = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)
        if variant:
            resized = np.clip(resized.astype(np.int16) + (variant % 7) - 3, 0, 255).astype(np.uint8)
        resized = np.ascontiguousarray(resized)
        resized[0, :2] = (index % 256, index // 256, 7)  # distinct bytes (and sha256) for every image
        out.append(resized)
    return out


def run_baseline(segmenter, photos, points, sampler) -> dict:
    from PIL import Image
    from segment_anything import SamPredictor

    predictor = SamPredictor(segmenter.model)
    stages = {"set_image": 0.0, "predict": 0.0, "edit": 0.0, "encode": 0.0}
    per_variant = []
    sampler.reset()
    started = time.perf_counter()
    for rgb in photos:
        h, w = rgb.shape[:2]
        for x_norm, y_norm in points:
            t0 = time.perf_counter()
            predictor.set_image(rgb)
            t1 = time.perf_counter()
            coords = np.array([[x_norm * (w - 1), y_norm * (h - 1)]], dtype=np.float32)
            masks, scores, _ = predictor.predict(coords, np.array([1]), multimask_output=True)
            mask = masks[int(np.argmax(scores))]
            t2 = time.perf_counter()
            edited = naive_edit(rgb, mask, EDITS_B)
            t3 = time.perf_counter()
            buffer = io.BytesIO()
            Image.fromarray(edited).save(buffer, format="PNG")
            t4 = time.perf_counter()
            for key, a, b in (
                ("set_image", t0, t1),
                ("predict", t1, t2),
                ("edit", t2, t3),
                ("encode", t3, t4),
            ):
                stages[key] += (b - a) * 1000
            per_variant.append((t4 - t0) * 1000)
    wall = time.perf_counter() - started
    return {
        "variants": len(per_variant),
        "wall_s": wall,
        "encoder_calls": len(per_variant),
        "stages": stages,
        "median_ms": statistics.median(per_variant),
        "peak_rss": sampler.peak,
    }


def run_job(dataset, owner, templates, edits: dict, sampler, rss_trace: list | None = None) -> dict:
    from datasets.jobs import runners as runner
    from datasets.jobs.services import job_create
    from datasets.jobs.signals import job_event
    from datasets.models import GenerationJob

    def on_item(sender, job, event_type, payload, **kwargs):
        if event_type == "item" and rss_trace is not None:
            rss_trace.append(sampler.rss())

    job_event.connect(on_item, dispatch_uid="bench-rss")
    sampler.reset()
    started = time.perf_counter()
    try:
        with runner.use_runner("inline"):
            job = job_create(
                dataset=dataset, owner=owner, templates=[(t, edits) for t in templates], compose="each"
            )
    finally:
        job_event.disconnect(dispatch_uid="bench-rss")
    wall = time.perf_counter() - started
    job = GenerationJob.objects.get(pk=job.pk)
    assert job.status == "succeeded", (job.status, job.error)
    item_ms = [ms for ms in job.items.values_list("ms", flat=True) if ms is not None]
    return {
        "variants": job.variant_count,
        "wall_s": wall,
        "encoder_calls": job.encoder_calls,
        "cache_hits": job.cache_hits,
        "stages": job.timings_ms,
        "median_ms": statistics.median(item_ms) if item_ms else 0.0,
        "peak_rss": sampler.peak,
        "failed": job.failed_items,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", choices=["tiny", "vit_b"], default="tiny")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--templates", type=int, default=3)
    parser.add_argument("--size", type=int, default=512, help="side of the square test photos (px)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--database-url", help="default: a SQLite file in the temporary directory")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (checkpoint, files)"
    )
    args = parser.parse_args()
    if not 1 <= args.templates <= len(POINTS):
        parser.error(f"--templates must be 1..{len(POINTS)}")

    workdir = Path(tempfile.mkdtemp(prefix="samgen-bench-"))
    if not args.keep:
        import atexit
        import shutil

        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    os.environ.update(
        {
            "VAR_DIR": str(workdir),
            "MEDIA_ROOT": str(workdir / "media"),
            "EMBED_CACHE_DIR": str(workdir / "embeddings"),
            "EMBED_CACHE_MB": "20000",
            "DATABASE_URL": args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}",
            "SAM_BACKEND": "sam",
            "JOB_RUNNER": "inline",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "samsite.settings",
        }
    )
    # DEBUG stays off (production settings); they refuse to start without a key.
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
    from imaging.tiny_sam import build_tiny_sam_checkpoint, build_vit_b_random_checkpoint

    build = build_tiny_sam_checkpoint if args.checkpoint == "tiny" else build_vit_b_random_checkpoint
    os.environ["SAM_CHECKPOINT"] = str(build(workdir / f"sam_{args.checkpoint}.pth"))

    import django

    django.setup()
    from django.core.management import call_command

    from datasets.segmentation import app_segmenter

    call_command("migrate", verbosity=0)
    sampler = RssSampler()
    print(f"workdir {workdir}; torch threads {__import__('torch').get_num_threads()}; cpus {os.cpu_count()}")
    t0 = time.perf_counter()
    segmenter = app_segmenter()
    print(f"model {segmenter.model_type} loaded in {time.perf_counter() - t0:.1f}s, rss {mb(sampler.rss())}")

    photos = make_photos(args.images, args.size)
    points = POINTS[: args.templates]
    owner, dataset, templates = create_bench_dataset(photos, [[point] for point in points])

    results = {}
    if not args.skip_baseline:
        print("(a) baseline ...", flush=True)
        results["a"] = run_baseline(segmenter, photos, points, sampler)
    print("(b) first run, cold cache ...", flush=True)
    trace: list[int] = []
    results["b"] = run_job(dataset, owner, templates, EDITS_B, sampler, trace)
    print("(c) re-run with changed edits, warm cache ...", flush=True)
    results["c"] = run_job(dataset, owner, templates, EDITS_C, sampler)
    sampler.stop()

    n, t = args.images, args.templates
    print(
        f"\n{args.checkpoint}: {n} images {args.size}x{args.size}, {t} templates, {n * t} variants per run\n"
    )
    header = f"{'run':<26}{'variants/s':>11}{'wall s':>9}{'encoder':>9}{'median ms':>11}{'peak RSS':>11}"
    print(header)
    print("-" * len(header))
    labels = {"a": "(a) naive baseline", "b": "(b) first run (cold)", "c": "(c) re-run (warm cache)"}
    for key, r in results.items():
        rate = r["variants"] / r["wall_s"]
        median_label = "/variant" if key == "a" else "/image"
        print(
            f"{labels[key]:<26}{rate:>11.2f}{r['wall_s']:>9.1f}{r['encoder_calls']:>9}"
            f"{r['median_ms']:>8.0f}{median_label:<3}{mb(r['peak_rss']):>11}"
        )
    print("\nper-stage time (ms, summed):")
    for key, r in results.items():
        stages = ", ".join(f"{k} {v:,.0f}" for k, v in r["stages"].items())
        print(f"  {labels[key]}: {stages}")
    for key in ("b", "c"):
        stages = results[key]["stages"]
        summed = sum(stages.get(k, 0.0) for k in ("decode", "embed", "predict", "edit", "encode", "store"))
        if stages.get("wall"):
            print(f"  {key}: stages sum {summed:,.0f} ms vs loop wall {stages['wall']:,.0f} ms (overlap saves "
                  f"{max(0.0, summed - stages['wall']):,.0f} ms)")  # fmt: skip
    rate = {key: r["variants"] / r["wall_s"] for key, r in results.items()}
    if "a" in rate:
        print(f"\nb/a throughput ratio: {rate['b'] / rate['a']:.2f}x  (target >= 0.9 x T = {0.9 * t:.1f}x)")
    print(f"c/b throughput ratio: {rate['c'] / rate['b']:.1f}x  (target >= 20x)")
    if len(trace) >= 4:
        quarter = len(trace) // 4
        first = statistics.median(trace[:quarter])
        last = statistics.median(trace[-quarter:])
        print(
            f"RSS along run (b): first quarter median {mb(first)}, last quarter median {mb(last)}, "
            f"growth {(last - first) / 2**20:+.0f} MB over {len(trace) - quarter} images"
        )


if __name__ == "__main__":
    main()
