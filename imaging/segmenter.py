"""The segmenter interface shared by the SAM and classical backends.

A segmenter turns an image into an :class:`Embedding` once (the expensive step, cached on disk for SAM) and
then answers any number of point prompts on it with :class:`MaskCandidate` values. The embedding carries
everything prediction needs (features plus the original and model-input sizes), so prediction never relies
on state left behind by a previous ``encode`` — which is what makes the segmenters thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np


@dataclass(frozen=True)
class Embedding:
    """An encoded image.

    ``features``: SAM: the image-encoder output ``1 x C x 64 x 64`` as float16 (the stored form; prediction
    uses it as given, so a cached re-run is bit-identical to the first run). Classical: the downscaled RGB
    image. ``original_size`` is ``(h, w)`` of the source image; ``input_size`` is ``(h, w)`` after the
    backend's resize (SAM: ResizeLongestSide to 1024). ``fingerprint`` identifies the segmenter that made it.
    """

    features: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    fingerprint: str

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)


@dataclass(frozen=True)
class MaskCandidate:
    """One predicted mask: ``mask`` is bool ``HxW`` at the original image size; ``score`` is the backend's
    quality estimate (SAM: predicted IoU; classical: boundary contrast, see :mod:`imaging.classical`).
    ``stability`` is the stability score of the mask logits (``imaging.annotations.stability_score``; SAM: of
    the decoder's low-resolution logits), None for a backend without logits (classical)."""

    mask: np.ndarray
    score: float
    stability: float | None = None

    @property
    def area(self) -> int:
        """Number of mask pixels."""
        return int(np.count_nonzero(self.mask))

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """``(xmin, ymin, xmax, ymax)`` with inclusive pixel bounds, or None for an empty mask."""
        return mask_bbox(self.mask)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive ``(xmin, ymin, xmax, ymax)`` of the non-zero pixels of ``mask``, or None when it is empty."""
    m = np.ascontiguousarray(mask)
    m8 = m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8)
    if not m8.any():
        return None
    x, y, w, h = cv2.boundingRect(m8)
    return (int(x), int(y), int(x + w - 1), int(y + h - 1))


@runtime_checkable
class Segmenter(Protocol):
    """What the rest of the product needs from a segmentation backend.

    ``backend`` is "sam" or "classical"; ``fingerprint`` changes whenever the weights or the method change
    and is stable across processes (it keys the embedding cache); ``cacheable`` says whether embeddings are
    worth storing on disk; ``encode_calls`` counts calls to :meth:`encode` (tests and the job runner use it).
    Implementations are safe to call from several threads.
    """

    backend: str
    fingerprint: str
    model_type: str | None
    device: str
    cacheable: bool
    encode_calls: int

    def encode(self, rgb: np.ndarray) -> Embedding:
        """Encode an RGB uint8 ``HxWx3`` image."""
        ...

    def predict(
        self,
        embedding: Embedding,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        *,
        multimask: bool = True,
    ) -> list[MaskCandidate]:
        """Masks for pixel ``point_coords`` (Nx2, x then y, original image pixels) and ``point_labels``
        (N, 1 positive / 0 negative): up to 3 candidates, best score first."""
        ...


def predict_best_many(
    segmenter: Segmenter,
    embedding: Embedding,
    prompts: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    multimask: bool = True,
) -> list[MaskCandidate]:
    """The best-scoring candidate of each ``(point_coords, point_labels)`` prompt on one embedding.

    Uses the backend's own ``predict_best_many`` when it has one (SAM: the chosen mask only is upsampled to
    full size); otherwise ``predict`` per prompt and the first candidate of highest score. Either way the
    result of prompt ``i`` is that of ``max(segmenter.predict(...), key=score)`` for it alone.
    """
    own = getattr(segmenter, "predict_best_many", None)
    if own is not None:
        return own(embedding, prompts, multimask=multimask)
    return [
        max(segmenter.predict(embedding, coords, labels, multimask=multimask), key=lambda c: c.score)
        for coords, labels in prompts
    ]


def check_prompt(
    embedding: Embedding, fingerprint: str, point_coords: np.ndarray, point_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction request: the embedding must come from the segmenter with ``fingerprint``, and the
    prompt is normalised to ``(float32 Nx2, int32 N)`` with at least one point."""
    if embedding.fingerprint != fingerprint:
        raise ValueError("the embedding was made by a different segmenter")
    coords = np.asarray(point_coords, dtype=np.float32).reshape(-1, 2)
    labels = np.asarray(point_labels, dtype=np.int32).reshape(-1)
    if coords.shape[0] == 0:
        raise ValueError("at least one point is required")
    if coords.shape[0] != labels.shape[0]:
        raise ValueError(f"{coords.shape[0]} points but {labels.shape[0]} labels")
    return coords, labels
