"""What the benchmark scripts share (not a test): an RSS sampler, the old tool's naive edit, and the
benchmark dataset built through the ORM (call after ``django.setup()`` and ``migrate``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np


class RssSampler:
    """Peak resident set size of this process, sampled every 20 ms, per named phase."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def rss(self) -> int:
        return self.process.memory_info().rss

    def reset(self) -> None:
        self.peak = self.rss()

    def stop(self) -> None:
        self._stop.set()


def mb(value: float) -> str:
    return f"{value / 2**20:,.0f} MB"


def naive_edit(rgb: np.ndarray, mask: np.ndarray, edits: Mapping[str, float], *, is_grayscale: bool = False):
    """The old tool's kind of edit, the one naive baseline of every benchmark: float32 numpy over the WHOLE
    image for every step that is not neutral (scikit-image's numpy HSV, SciPy's Gaussian), each step written
    inside the mask with ``np.where``, the noise drawn for the mask's pixels, then opacity and rounding
    (EDITS.md's semantics, none of its speed rules)."""
    from scipy import ndimage
    from skimage import color

    steps = ("brightness", "contrast", "gamma", "hue", "saturation", "sharpen", "noise")
    value = {name: float(edits.get(name) or 0.0) for name in steps}
    opacity = 1.0 if edits.get("opacity") is None else float(edits["opacity"])
    x = rgb.astype(np.float32) / 255
    before = x.copy()
    inside = mask[:, :, None]
    if value["brightness"]:
        x = np.where(inside, np.clip(x + value["brightness"], 0, 1), x)
    if value["contrast"]:
        x = np.where(inside, np.clip((x - 0.5) * (1 + value["contrast"]) + 0.5, 0, 1), x)
    if value["gamma"]:
        x = np.where(inside, np.clip(x ** (1 / max(1e-3, 1 + value["gamma"])), 0, 1), x)
    if not is_grayscale and (value["hue"] or value["saturation"]):
        hsv = color.rgb2hsv(x)
        hsv[..., 0] = (hsv[..., 0] + value["hue"] / 360) % 1
        hsv[..., 1] = np.clip(hsv[..., 1] * (1 + value["saturation"]), 0, 1)
        x = np.where(inside, np.clip(color.hsv2rgb(hsv), 0, 1).astype(np.float32), x)
    if value["sharpen"]:
        blurred = ndimage.gaussian_filter(x, sigma=(1, 1, 0), mode="mirror", truncate=4.0)
        x = np.where(inside, np.clip(x + value["sharpen"] * (x - blurred), 0, 1), x)
    if value["noise"]:
        area = int(mask.sum())
        rng = np.random.default_rng(area * 14 % (2**32 - 1))
        noisy = x.copy()
        noisy[mask] += rng.standard_normal((area, 3), dtype=np.float32) * np.float32(value["noise"])
        x = np.where(inside, np.clip(noisy, 0, 1), x)
    if opacity != 1.0:
        x = np.where(inside, opacity * x + (1 - opacity) * before, x)
    return np.floor(x * 255 + 0.5).astype(np.uint8)


def create_bench_dataset(
    images: Sequence[np.ndarray], template_points: Sequence[Sequence[tuple[float, float]]]
):
    """A dataset owned by a new user "bench": ``images`` stored as PNG ``photo_<i>.png``, and one template
    ``T<n>`` per entry of ``template_points`` (normalised ``(x, y)`` positive points). Returns
    ``(owner, dataset, templates)``."""
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile

    from datasets.models import Dataset, DatasetImage
    from imaging.codecs import encode_image, sha256_hex
    from templates_app.models import Template

    owner = get_user_model().objects.create(username="bench")
    dataset = Dataset.objects.create(owner=owner, name="bench")
    for position, rgb in enumerate(images):
        data = encode_image(rgb, "png")
        DatasetImage.objects.create(
            dataset=dataset,
            file=ContentFile(data, name=f"photo_{position}.png"),
            original_filename=f"photo_{position}.png",
            filename=f"photo_{position}.png",
            width=rgb.shape[1],
            height=rgb.shape[0],
            size_bytes=len(data),
            sha256=sha256_hex(data),
            position=position,
        )
    templates = [
        Template.objects.create(
            dataset=dataset,
            name=f"T{index + 1}",
            points=[{"x_norm": x, "y_norm": y, "positive": True} for x, y in points],
            position=index,
        )
        for index, points in enumerate(template_points)
    ]
    return owner, dataset, templates
