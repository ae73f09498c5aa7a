"""Side by side with the old tool: warm, after-restart and cold runs on real 2048x1536 photos (not a test).

Run: ``python bench/seed_compare.py --checkpoint tiny|vit_b [--images N] [--runs R] [--threads T]``.

Two templates stacked, PNG output, the same weights on both sides, in one run:

* old warm (cache hot): per image, the cached embedding; per template one ``SamPredictor.predict`` with its
  three full-size masks, the best kept; float32 numpy edits over the whole image (``bench.common.naive_edit``:
  scikit-image HSV, SciPy blur, each non-neutral step, EDITS.md's semantics); Pillow PNG at compress level 2. Ours: a REST job (inline runner) once the
  embedding cache is hot, per image = job wall / images.
* old after restart: it re-encodes every image, then the warm path. Ours: a NEW process on the same cache
  directory and database runs the job (the model load, which the web process does in the background at
  start, is reported apart).
* old cold: its silent precompute (one encoder pass per image) plus its stream (the warm path). Ours: a job
  on an empty cache.

Peak RSS is sampled per phase (20 ms). Ratios are printed against the targets of issue 12 (warm >= 10x,
after restart >= 50x, cold >= 1.2x with vit_b, peak RSS <= 3.0 GB). The preview target is measured by
``bench/api_bench.py --skip-upload``. Everything lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RssSampler, create_bench_dataset, mb, naive_edit  # noqa: E402

EDITS = [
    {"brightness": 0.15, "contrast": 0.2, "hue": 25, "saturation": 0.3, "sharpen": 0.8},
    {"brightness": -0.1, "gamma": 0.4, "noise": 0.03},
]
POINTS = [[(0.5, 0.45)], [(0.3, 0.7), (0.7, 0.3)]]  # two templates, of one and two positive points
GB = 2**30


def photos(count: int) -> list[np.ndarray]:
    """Real photos (scikit-image samples) resized to 2048x1536, each with distinct bytes."""
    import cv2
    from skimage import data

    samples = (data.astronaut, data.coffee, data.chelsea, data.rocket, data.immunohistochemistry)
    out = []
    for index in range(count):
        rgb = cv2.resize(samples[index % len(samples)](), (2048, 1536), interpolation=cv2.INTER_CUBIC)
        rgb[0, :2] = (index % 256, index // 256, 7)
        out.append(np.ascontiguousarray(rgb))
    return out


def configure(workdir: Path, checkpoint: str, threads: int) -> None:
    os.environ.update(
        {
            "VAR_DIR": str(workdir),
            "MEDIA_ROOT": str(workdir / "media"),
            "EMBED_CACHE_DIR": str(workdir / "embeddings"),
            "EMBED_CACHE_MB": "20000",
            "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{workdir / 'bench.sqlite3'}",
            "SAM_BACKEND": "sam",
            "SAM_CHECKPOINT": checkpoint,
            "SAM_PRELOAD": "false",
            "JOB_RUNNER": "inline",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "samsite.settings",
        }
    )
    # DEBUG stays off (production settings); they refuse to start without a key.
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
    import torch

    torch.set_num_threads(threads)
    import django

    django.setup()


def old_warm_image(predictor, rgb: np.ndarray) -> bytes:
    """The old tool's per-image work once the embedding is set."""
    from PIL import Image

    h, w = rgb.shape[:2]
    out = rgb
    for points, edits in zip(POINTS, EDITS, strict=True):
        coords = np.array([[x * (w - 1), y * (h - 1)] for x, y in points], dtype=np.float32)
        masks, scores, _ = predictor.predict(coords, np.ones(len(points)), multimask_output=True)
        out = naive_edit(out, masks[int(np.argmax(scores))], edits)
    buffer = io.BytesIO()
    Image.fromarray(out).save(buffer, format="PNG", compress_level=2)
    return buffer.getvalue()


def upstream_model(checkpoint: str):
    """The old tool's model: segment-anything's modules as built upstream (no chunked attention)."""
    import torch

    from imaging.sam import build_sam_model, infer_sam_config

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = build_sam_model(infer_sam_config(state))
    model.load_state_dict(state)
    return model.eval()


def run_old(model, images, sampler, *, embeddings=None) -> dict:
    """Per-image seconds of the old tool: with ``embeddings`` (its cache hot) the warm path, else it encodes
    every image first (its precompute, or its re-encode after a restart)."""
    import torch
    from segment_anything import SamPredictor

    predictor = SamPredictor(model)
    sampler.reset()
    per_image, encode_s = [], []
    for index, rgb in enumerate(images):
        t0 = time.perf_counter()
        if embeddings is None:
            predictor.set_image(rgb)
        else:
            emb = embeddings[index]
            predictor.features = torch.from_numpy(emb.features).float()
            predictor.original_size, predictor.input_size = emb.original_size, emb.input_size
            predictor.is_image_set = True
        t1 = time.perf_counter()
        old_warm_image(predictor, rgb)
        per_image.append(time.perf_counter() - t0)
        encode_s.append(t1 - t0)
    return {"per_image_s": statistics.median(per_image), "encode_s": statistics.median(encode_s),
            "peak_rss": sampler.peak}  # fmt: skip


def setup_dataset(images):
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return create_bench_dataset(images, POINTS)[1]


def run_ours(dataset_id: str, sampler) -> dict:
    """One REST job over the dataset (stack, PNG), inline; per-image seconds and the job's stage times."""
    from datasets.jobs import runners
    from datasets.jobs.services import job_create
    from datasets.models import Dataset, GenerationJob

    dataset = Dataset.objects.get(pk=dataset_id)
    templates = list(dataset.templates.order_by("position"))
    sampler.reset()
    started = time.perf_counter()
    with runners.use_runner("inline"):
        job = job_create(
            dataset=dataset,
            owner=dataset.owner,
            templates=[(t, e) for t, e in zip(templates, EDITS, strict=True)],
            compose="stack",
        )
    wall = time.perf_counter() - started
    job = GenerationJob.objects.get(pk=job.pk)
    assert job.status == "succeeded" and not job.failed_items, (job.status, job.error)
    n = job.total_items
    stages = {k: round(v / n) for k, v in job.timings_ms.items() if k != "load"}
    return {"per_image_s": wall / n, "encoder_calls": job.encoder_calls, "stages_ms": stages,
            "peak_rss": sampler.peak}  # fmt: skip


def child(args) -> None:
    """The after-restart side: a fresh process on the same database, media and embedding cache."""
    configure(Path(args.workdir), args.checkpoint_path, args.threads)
    sampler = RssSampler()
    from datasets.segmentation import app_segmenter

    t0 = time.perf_counter()
    app_segmenter()
    load_s = time.perf_counter() - t0
    result = run_ours(args.dataset_id, sampler)
    result["load_s"] = load_s
    sampler.stop()
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", choices=["tiny", "vit_b"], default="tiny")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3, help="warm runs of each side (medians)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (see README)")
    parser.add_argument("--skip-cold", action="store_true", help="no cold runs (fast tiny-model check)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-path", help=argparse.SUPPRESS)
    parser.add_argument("--dataset-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    workdir = Path(tempfile.mkdtemp(prefix="samgen-seedcmp-"))
    import atexit
    import shutil

    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    from imaging.tiny_sam import build_tiny_sam_checkpoint, build_vit_b_random_checkpoint

    build = build_tiny_sam_checkpoint if args.checkpoint == "tiny" else build_vit_b_random_checkpoint
    checkpoint = str(build(workdir / f"sam_{args.checkpoint}.pth"))
    configure(workdir, checkpoint, args.threads)
    import torch

    from datasets.segmentation import app_segmenter

    sampler = RssSampler()
    app_segmenter()
    images = photos(args.images)
    dataset = setup_dataset(images)
    print(f"{args.checkpoint}: {args.images} photos 2048x1536, 2 templates stacked, PNG; torch threads "
          f"{torch.get_num_threads()}, cpus {os.cpu_count()}", flush=True)  # fmt: skip

    results: dict[str, dict] = {}
    if not args.skip_cold:
        print("cold: ours (empty cache) ...", flush=True)
        results["ours_cold"] = run_ours(str(dataset.pk), sampler)
    else:
        run_ours(str(dataset.pk), sampler)  # fills the cache
    old = upstream_model(checkpoint)  # built after our cold run, so its weights are not in our peak
    if not args.skip_cold:
        print("cold: old tool (precompute + stream) ...", flush=True)
        results["old_cold"] = run_old(old, images, sampler)
    from datasets.segmentation import embedding_for
    from imaging.codecs import encode_image, sha256_hex

    cached = [embedding_for(sha256=sha256_hex(encode_image(rgb, "png")), rgb=rgb)[0] for rgb in images]
    print("warm runs ...", flush=True)
    ours_warm = [run_ours(str(dataset.pk), sampler) for _ in range(args.runs)]
    old_warm = [run_old(old, images, sampler, embeddings=cached) for _ in range(args.runs)]
    results["ours_warm"] = min(ours_warm, key=lambda r: r["per_image_s"]) | {
        "per_image_s": statistics.median(r["per_image_s"] for r in ours_warm)
    }
    results["old_warm"] = {"per_image_s": statistics.median(r["per_image_s"] for r in old_warm),
                           "peak_rss": max(r["peak_rss"] for r in old_warm)}  # fmt: skip
    print("after restart: ours in a new process ...", flush=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "--workdir", str(workdir), "--checkpoint-path", checkpoint,
         "--dataset-id", str(dataset.pk), "--threads", str(args.threads)],
        capture_output=True, text=True, check=True, env=os.environ.copy(),
    )  # fmt: skip
    results["ours_restart"] = json.loads(proc.stdout.split("RESULT ", 1)[1])
    if "old_cold" in results:
        results["old_restart"] = results[
            "old_cold"
        ]  # the same work: re-encode every image, then the warm path
    else:
        print("after restart: old tool (re-encodes every image) ...", flush=True)
        results["old_restart"] = run_old(old, images[: min(3, len(images))], sampler)
    sampler.stop()

    print(f"\n{'side':<24}{'s / image':>11}{'peak RSS':>11}  detail")
    for key, r in results.items():
        detail = ""
        if "stages_ms" in r:
            detail = ", ".join(f"{k} {v}" for k, v in r["stages_ms"].items()) + " (ms / image)"
        if "load_s" in r:
            detail += f"; model load {r['load_s']:.1f} s (in the background at start)"
        if r.get("encode_s"):
            detail = f"encode {r['encode_s']:.1f} s / image"
        print(f"{key:<24}{r['per_image_s']:>11.3f}{mb(r['peak_rss']):>11}  {detail}")

    def ratio(old: str, ours: str) -> float:
        return results[old]["per_image_s"] / results[ours]["per_image_s"]

    print("\ntargets:")
    print(f"  warm re-run       {ratio('old_warm', 'ours_warm'):6.1f}x  (target >= 10x)")
    print(f"  after restart     {ratio('old_restart', 'ours_restart'):6.1f}x  (target >= 50x)")
    if "ours_cold" in results:
        print(f"  cold run          {ratio('old_cold', 'ours_cold'):6.2f}x  (target >= 1.2x with vit_b)")
    ours_peak = max(r["peak_rss"] for k, r in results.items() if k.startswith("ours"))
    old_peak = max(r["peak_rss"] for k, r in results.items() if k.startswith("old"))
    print(f"  peak RSS          ours {ours_peak / GB:.2f} GB, old {old_peak / GB:.2f} GB  (target <= 3.0 GB)")


if __name__ == "__main__":
    main()
