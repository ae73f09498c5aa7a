"""Benchmark of the imaging hot path: edits and encoders at 1024x1024, one thread.

Run: ``python bench/imaging_bench.py [--runs 7] [--decoded]``. Prints a table of medians (ms) and ratios against
naive implementations like the old tool's (float32 numpy over the whole image, scikit-image HSV, SciPy blur,
Pillow PNG at its default compression). ``--decoded`` adds the decoded cache (``imaging.decoded_cache``) on a
2048x1536 photo: a hit and a miss (decode and store) against ``decode_image``, in a temporary directory
removed afterwards; nothing else is written.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# One thread everywhere: the target is per core, and the job runner parallelises across images instead.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import naive_edit  # noqa: E402
from imaging.codecs import decode_image, encode_image, sha256_hex  # noqa: E402
from imaging.decoded_cache import DecodedImageCache  # noqa: E402
from imaging.edits import Edits, apply_edits  # noqa: E402

SIZE = 1024
FULL = Edits(
    brightness=0.1, contrast=0.2, gamma=0.3, hue=30, saturation=0.4, sharpen=1.0, noise=0.05, opacity=0.8
)


def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(cv2.resize(data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC))


def quarter_masks() -> dict[str, np.ndarray]:
    square = np.zeros((SIZE, SIZE), bool)
    square[256:768, 256:768] = True
    yy, xx = np.mgrid[:SIZE, :SIZE]
    radius = SIZE * np.sqrt(0.25 / np.pi)  # a disc covering a quarter of the image
    disc = (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 <= radius**2
    return {"square": square, "disc": disc}


def naive_per_pixel_tone(rgb: np.ndarray, mask: np.ndarray, e: Edits) -> np.ndarray:
    """The old tool's style for the tone steps: a Python loop over the masked pixels' values."""
    out = rgb.copy()
    ys, xs = np.nonzero(mask)
    values = rgb[ys, xs].astype(np.float32).tolist()
    result = []
    for pixel in values:
        px = []
        for v in pixel:
            x = min(1.0, max(0.0, v / 255 + e.brightness))
            x = min(1.0, max(0.0, (x - 0.5) * (1 + e.contrast) + 0.5))
            x = min(1.0, max(0.0, x ** (1 / max(1e-3, 1 + e.gamma))))
            px.append(int(x * 255 + 0.5))
        result.append(px)
    out[ys, xs] = np.array(result, dtype=np.uint8)
    return out


def timed_ms(fn: Callable[[], object], runs: int, warmup: int = 1) -> tuple[float, float]:
    """(median, best) wall time in ms. The best run shows the uncontended cost on a shared, noisy machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def pil_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def decoded_rows(runs: int) -> list[tuple[str, float, float, float | None, str]]:
    """A hit and a miss of the decoded cache on a 2048x1536 photo (PNG as Pillow writes it, JPEG q92) against
    ``decode_image`` of the same bytes: what a job's decode step costs re-run, and on first sight."""
    from skimage import data

    rgb = np.ascontiguousarray(cv2.resize(data.astronaut(), (2048, 1536), interpolation=cv2.INTER_CUBIC))
    rows: list[tuple[str, float, float, float | None, str]] = []
    directory = Path(tempfile.mkdtemp(prefix="samgen-decoded-bench-"))
    try:
        for fmt, encoded in (("png", pil_png(rgb)), ("jpeg", encode_image(rgb, "jpeg"))):
            digest = sha256_hex(encoded)
            base, _ = timed_ms(lambda b=encoded: decode_image(b), runs)
            cache = DecodedImageCache(directory, max_bytes=10**10)

            def miss(b=encoded, d=digest, c=cache) -> None:
                c.clear()
                c.get_or_decode(d, lambda: b, max_pixels=10**8)

            med, best = timed_ms(miss, runs)
            rows.append(
                (f"decoded cache {fmt} 2048x1536: miss (decode+store)", med, best, base, "decode_image")
            )
            cache.get_or_decode(digest, lambda b=encoded: b, max_pixels=10**8)
            med, best = timed_ms(lambda d=digest, c=cache: c.get_or_decode(d, bytes, max_pixels=10**8), runs)
            rows.append((f"decoded cache {fmt} 2048x1536: hit", med, best, base, "decode_image"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--decoded", action="store_true", help="add the decoded cache's figures")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency, but the bench does not need it
        pass

    rgb = photo()
    gray = np.ascontiguousarray(np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2))
    masks = quarter_masks()
    runs = args.runs
    few = max(3, runs // 2)
    # (case, our median, our best, baseline median or None, baseline name)
    rows: list[tuple[str, float, float, float | None, str]] = []

    cases = {
        "full edit set": FULL,
        "without noise": Edits(**{**FULL.to_dict(), "noise": 0.0}),
        "tone + opacity only (LUT)": Edits(brightness=0.1, contrast=0.2, gamma=0.3, opacity=0.8),
        "hue + saturation": Edits(hue=30, saturation=0.4),
        "sharpen": Edits(sharpen=1.0),
        "noise": Edits(noise=0.05),
    }
    for mask_name, mask in masks.items():
        naive, _ = timed_ms(lambda m=mask: naive_edit(rgb, m, FULL.to_dict()), few)
        for label, edits in cases.items():
            med, best = timed_ms(lambda e=edits, m=mask: apply_edits(rgb, m, e, is_grayscale=False), runs)
            baseline = naive if label == "full edit set" else None
            rows.append((f"edits colour {mask_name}: {label}", med, best, baseline, "naive float32 numpy"))
        med, best = timed_ms(lambda m=mask: apply_edits(gray, m, FULL, is_grayscale=True), runs)
        naive_gray, _ = timed_ms(lambda m=mask: naive_edit(gray, m, FULL.to_dict(), is_grayscale=True), few)
        rows.append((f"edits gray {mask_name}: full edit set", med, best, naive_gray, "naive float32 numpy"))

    tone = cases["tone + opacity only (LUT)"]
    med, best = timed_ms(lambda: apply_edits(rgb, masks["square"], tone, is_grayscale=False), runs)
    loop_tone, _ = timed_ms(lambda: naive_per_pixel_tone(rgb, masks["square"], tone), 1, warmup=0)
    rows.append(("edits colour square: tone, vs per-pixel lists", med, best, loop_tone, "old tool style"))

    pil_ms, _ = timed_ms(lambda: pil_png(rgb), few)
    for fmt in ("png", "jpeg", "webp"):
        med, best = timed_ms(lambda f=fmt: encode_image(rgb, f), runs)
        rows.append((f"encode {fmt} 1024x1024", med, best, pil_ms, "PIL PNG default"))
    sizes = {fmt: len(encode_image(rgb, fmt)) for fmt in ("png", "jpeg", "webp")}
    if args.decoded:
        rows.extend(decoded_rows(runs))

    width = max(len(r[0]) for r in rows)
    print(f"imaging bench: {SIZE}x{SIZE} astronaut, mask = a quarter of the image, one thread, {runs} runs")
    print(
        f"{'case':<{width}}  {'median ms':>9}  {'best ms':>8}  {'baseline ms':>11}  {'speed-up':>8}  baseline"
    )
    for name, med, best, base, base_name in rows:
        if base is None:
            print(f"{name:<{width}}  {med:9.2f}  {best:8.2f}")
        else:
            print(f"{name:<{width}}  {med:9.2f}  {best:8.2f}  {base:11.1f}  {base / med:7.1f}x  {base_name}")
    print(
        f"sizes: png {sizes['png'] / 1e6:.2f} MB, jpeg {sizes['jpeg'] / 1e6:.2f} MB, "
        f"webp {sizes['webp'] / 1e6:.2f} MB, PIL png {len(pil_png(rgb)) / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
