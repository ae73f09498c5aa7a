"""What the benchmark scripts share (not a test): an RSS sampler, the old tool's naive edit, and the
benchmark dataset built through the ORM (call after ``django.setup()`` and ``migrate``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

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


def naive_edit(rgb: np.ndarray, mask: np.ndarray, edits: dict) -> np.ndarray:
    """The old tool's approach: float32 over the whole image for every step, then a masked composite."""
    import cv2

    x = rgb.astype(np.float32) / 255.0
    x = np.clip(x + edits.get("brightness", 0.0), 0, 1)
    x = np.clip((x - 0.5) * (1 + edits.get("contrast", 0.0)) + 0.5, 0, 1)
    gamma = edits.get("gamma", 0.0)
    if gamma:
        x = np.clip(x ** (1 / max(1e-3, 1 + gamma)), 0, 1)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + edits.get("hue", 0.0)) % 360
    hsv[..., 1] = np.clip(hsv[..., 1] * (1 + edits.get("saturation", 0.0)), 0, 1)
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if edits.get("sharpen"):
        x = np.clip(x + edits["sharpen"] * (x - cv2.GaussianBlur(x, (0, 0), 1.0)), 0, 1)
    if edits.get("noise"):
        x = np.clip(x + np.random.default_rng(0).normal(0, edits["noise"], x.shape).astype(np.float32), 0, 1)
    out = np.where(mask[:, :, None], x, rgb.astype(np.float32) / 255.0)
    return (out * 255).astype(np.uint8)


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
