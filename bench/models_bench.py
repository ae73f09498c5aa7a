"""Benchmark of the model families: encoder and decoder time per image, and a cold run of real photos.

Run: ``python bench/models_bench.py [--images 20] [--runs 3] [--families vit_b,mobile_sam,...]``.

Every family runs with random weights built by its own package (:mod:`imaging.tiny_families`,
:mod:`imaging.tiny_sam`) at its smallest published size, plus SAM vit_b (the baseline): SAM ``vit_b``,
MobileSAM (TinyViT-5M), SAM-HQ ``vit_tiny``, SAM 2.1 ``hiera_tiny``. Timings do not depend on the weights.

1. **Encoder / decoder**: median over ``--runs`` of ``encode`` on a 1024x1024 photo, and of ``predict`` (one
   positive point, three candidates, masks at 1024x1024) on its embedding.
2. **Cold run**: ``--images`` scikit-image photos (resized so the longest side is 1024, flipped/rotated
   variants when more are asked for than the library holds), through a fresh embedding cache: load the model,
   then per image ``get_or_encode`` + one ``predict``, as a job does on a new dataset. The ratio is vit_b's
   time over the family's (targets: MobileSAM >= 5x, SAM 2.1 tiny >= 2x).
3. On CUDA (when present), ``encode_batch`` images/s with ``--batch-size`` under autocast.

Writes nothing outside a temporary folder (``--work-dir`` keeps the checkpoints between runs).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = {
    # name: (checkpoint builder kind, label)
    "vit_b": ("vit_b", "SAM vit_b"),
    "mobile_sam": ("mobile_sam", "MobileSAM"),
    "sam_hq_vit_tiny": ("sam_hq_vit_tiny", "SAM-HQ vit_tiny"),
    "sam2_hiera_tiny": ("sam2_hiera_tiny", "SAM 2.1 hiera_tiny"),
}
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "camera")


def photos(n: int) -> list[np.ndarray]:
    """``n`` distinct RGB photos, longest side 1024."""
    import cv2
    from skimage import data

    base = []
    for name in _PHOTOS:
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        h, w = img.shape[:2]
        scale = 1024 / max(h, w)
        img = cv2.resize(img[:, :, :3], (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
        base.append(np.ascontiguousarray(img))
    out = []
    variants = (lambda a: a, np.fliplr, np.flipud, lambda a: np.rot90(a, 2))
    for i in range(n):
        img = variants[(i // len(base)) % len(variants)](base[i % len(base)])
        out.append(np.ascontiguousarray(img))
    return out


def checkpoint(kind: str, folder: Path) -> Path:
    path = folder / f"bench_{kind}.pth"
    if path.exists():
        return path
    if kind == "vit_b":
        from imaging.tiny_sam import build_vit_b_random_checkpoint

        return build_vit_b_random_checkpoint(path, seed=0)
    from imaging.tiny_families import build_family_checkpoint

    return build_family_checkpoint(kind, path, seed=0)


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_family(name: str, folder: Path, images: list[np.ndarray], args) -> dict:
    from imaging.embedding_cache import EmbeddingCache
    from imaging.families import load_segmenter

    kind, _ = FAMILIES[name]
    path = checkpoint(kind, folder)
    result: dict = {"name": name}
    # Cold run first (nothing loaded yet): load + encode + predict per image, fresh cache.
    with tempfile.TemporaryDirectory(dir=folder) as cache_dir:
        start = time.perf_counter()
        segmenter = load_segmenter(path, device=args.device)
        result["load_s"] = time.perf_counter() - start
        cache = EmbeddingCache(cache_dir, max_bytes=1 << 34)
        for rgb in images:
            sha = hashlib.sha256(rgb.tobytes()).hexdigest()
            embedding, _ = cache.get_or_encode(sha, rgb, segmenter)
            h, w = rgb.shape[:2]
            segmenter.predict(embedding, np.array([[w / 2, h / 2]]), np.array([1]))
        result["cold_s"] = time.perf_counter() - start
    result["label"] = segmenter.label
    import cv2

    square = np.ascontiguousarray(cv2.resize(images[0], (1024, 1024), interpolation=cv2.INTER_AREA))
    embedding = segmenter.encode(square)
    result["encode_s"] = median_time(lambda: segmenter.encode(square), args.runs)
    point = (np.array([[512.0, 512.0]]), np.array([1]))
    segmenter.predict(embedding, *point)  # warm-up
    result["decode_s"] = median_time(lambda: segmenter.predict(embedding, *point), max(3, args.runs))
    if str(segmenter.device).startswith("cuda") and hasattr(segmenter, "encode_batch"):
        import torch

        batch = images[: max(args.batch_size * 2, 1)]
        segmenter.encode_batch(batch[: args.batch_size], batch_size=args.batch_size)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        segmenter.encode_batch(batch, batch_size=args.batch_size)
        torch.cuda.synchronize()
        result["images_per_s"] = len(batch) / (time.perf_counter() - start)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="photos in the cold run (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="repeats for the encoder median (default 3)")
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help="comma-separated subset of " + ", ".join(FAMILIES)
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=8, help="CUDA encode_batch size (default 8)")
    parser.add_argument("--work-dir", default=None, help="keep the random checkpoints here between runs")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown families: {', '.join(unknown)}")
    images = photos(args.images)
    folder_ctx = tempfile.TemporaryDirectory() if args.work_dir is None else None
    folder = Path(folder_ctx.name if folder_ctx else args.work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, cold run of {len(images)} photos (1024 px)"
    )
    results = []
    for name in names:
        r = bench_family(name, folder, images, args)
        results.append(r)
        print(
            f"  {r['label']:<20} load {r['load_s']:6.1f} s  encode {r['encode_s']:6.2f} s  "
            f"decode {r['decode_s'] * 1000:6.0f} ms  cold run {r['cold_s']:7.1f} s"
            + (f"  {r['images_per_s']:.1f} img/s (CUDA batch)" if "images_per_s" in r else ""),
            flush=True,
        )
    base = next((r for r in results if r["name"] == "vit_b"), None)
    print()
    print(f"| model | encoder / image | decoder / prompt | cold run, {len(images)} photos | vs vit_b |")
    print("|---|---|---|---|---|")
    for r in results:
        ratio = f"{base['cold_s'] / r['cold_s']:.1f}x" if base else "-"
        print(
            f"| {r['label']} | {r['encode_s']:.2f} s | {r['decode_s'] * 1000:.0f} ms | {r['cold_s']:.1f} s | {ratio} |"
        )
    if folder_ctx:
        folder_ctx.cleanup()
    return 0


if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(os.cpu_count() or 1))
    raise SystemExit(main())
