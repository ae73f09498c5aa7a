"""The segmenter interface shared by the SAM and classical backends.

A segmenter turns an image into an :class:`Embedding` once (the expensive step, cached on disk for SAM) and
then answers any number of prompts (points, a box, or both) on it with :class:`MaskCandidate` values. The embedding carries
everything prediction needs (features plus the original and model-input sizes), so prediction never relies
on state left behind by a previous ``encode`` — which is what makes the segmenters thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np


@dataclass(frozen=True)
class Embedding:
    """An encoded image.

    ``features``: SAM: the image-encoder output ``1 x C x 64 x 64`` as float16 (the stored form; prediction
    uses it as given, so a cached re-run is bit-identical to the first run). The other families store a mapping
    of named float16 arrays instead (MobileSAM: ``image_embed``; SAM-HQ: ``image_embed`` + ``interm``; SAM 2:
    ``image_embed`` + ``high_res_0`` + ``high_res_1``), which the embedding cache stores and reloads as is. Classical: the downscaled RGB image.
    ``original_size`` is ``(h, w)`` of the source image; ``input_size`` is ``(h, w)`` after the backend's
    resize (SAM: ResizeLongestSide to 1024). ``fingerprint`` identifies the segmenter that made it.
    """

    features: np.ndarray | Mapping[str, np.ndarray]
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    fingerprint: str

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays().values())

    def arrays(self) -> dict[str, np.ndarray]:
        """The features as named arrays: a plain array is ``{"features": array}``."""
        if isinstance(self.features, Mapping):
            return dict(self.features)
        return {"features": self.features}


@dataclass(frozen=True)
class Prompt:
    """One template's prompt on one image: points (``N x 2`` pixels, labels 1/0) and/or a box
    (``(x0, y0, x1, y1)`` pixels), and which candidate to keep (``"best"`` or an index, see
    :func:`choose_candidate`)."""

    coords: np.ndarray
    labels: np.ndarray
    box: Any = None
    mask_choice: str | int = "best"


@dataclass(frozen=True)
class MaskCandidate:
    """One predicted mask: ``mask`` is bool ``HxW`` at the original image size; ``score`` is the backend's
    quality estimate (SAM: predicted IoU; classical: boundary contrast, see :mod:`imaging.classical`).
    ``stability`` is the stability score of the mask logits (``imaging.annotations.stability_score``; SAM: of
    the decoder's low-resolution logits), None for a backend without logits (classical). ``index`` is the
    candidate's position in the model's own output (SAM's three mask tokens, the classical small/medium/large
    priors), which is stable across images, unlike the score order; None when the backend gave one mask only
    (single-mask output, SAM-HQ's fused mask)."""

    mask: np.ndarray
    score: float
    stability: float | None = None
    index: int | None = None

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

    ``backend`` is "sam" (every model family) or "classical"; ``family`` is "sam", "sam_hq", "mobile_sam",
    "sam2" or "classical"; ``model_type`` is the size ("vit_b", "vit_tiny", "hiera_tiny", "custom", None for
    classical) and ``label`` the name shown to people ("SAM vit_b", "SAM 2.1 hiera_tiny"); ``fingerprint``
    changes whenever the weights or the method change, names the family and size, and is stable across
    processes (it keys the embedding cache); ``cacheable`` says whether embeddings are worth storing on disk;
    ``encode_calls`` counts calls to :meth:`encode` (tests and the job runner use it). Implementations are
    safe to call from several threads.
    """

    backend: str
    family: str
    label: str
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
        point_coords: np.ndarray | None,
        point_labels: np.ndarray | None,
        box: Sequence[float] | np.ndarray | None = None,
        *,
        multimask: bool = True,
    ) -> list[MaskCandidate]:
        """Masks for pixel ``point_coords`` (Nx2, x then y, original image pixels) and ``point_labels``
        (N, 1 positive / 0 negative) and/or a ``box`` ``(x0, y0, x1, y1)`` in original image pixels (points
        may be empty or None when a box is given): up to 3 candidates, best score first."""
        ...


def check_rgb(rgb: Any) -> None:
    """Raise ValueError unless ``rgb`` is an ``HxWx3`` uint8 array (what every backend encodes)."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("expected an HxWx3 uint8 RGB array")


class SegmenterBase:
    """What every backend shares: the :meth:`predict` entry point, which validates the prompt the same way
    for all of them before the backend's :meth:`_predict` sees it, and the thread-safe ``encode_calls``
    counter. A subclass sets the :class:`Segmenter` attributes and implements ``encode`` and ``_predict``.
    """

    fingerprint: str

    def __init__(self) -> None:
        self.encode_calls = 0
        self._count_lock = threading.Lock()

    def _count_encodes(self, n: int) -> None:
        with self._count_lock:
            self.encode_calls += n

    def predict(
        self,
        embedding: Embedding,
        point_coords: np.ndarray | None,
        point_labels: np.ndarray | None,
        box: Sequence[float] | np.ndarray | None = None,
        *,
        multimask: bool = True,
    ) -> list[MaskCandidate]:
        """See :meth:`Segmenter.predict`. Raises ValueError for an embedding of another segmenter or an
        invalid prompt (:func:`check_prompt`, :func:`check_box`)."""
        prompt = validated_prompt(embedding, self.fingerprint, point_coords, point_labels, box)
        return self._predict(embedding, prompt, multimask)

    def _predict(self, embedding: Embedding, prompt: Prompt, multimask: bool) -> list[MaskCandidate]:
        """The backend's masks for a prompt checked by :func:`validated_prompt`; best score first."""
        raise NotImplementedError


def encode_batch(
    segmenter: Segmenter, images: Sequence[np.ndarray], *, batch_size: int = 4
) -> list[Embedding]:
    """Embeddings of ``images`` in order: the segmenter's own ``encode_batch`` when it has one (SAM families:
    batched with autocast on CUDA, a plain loop on CPU), else ``encode`` per image (classical)."""
    batched = getattr(segmenter, "encode_batch", None)
    if batched is not None:
        return batched(list(images), batch_size=batch_size)
    return [segmenter.encode(rgb) for rgb in images]


def check_box(box: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    """A box prompt ``(x0, y0, x1, y1)`` in image pixels as float32 ``(4,)`` with ``x0 <= x1``, ``y0 <= y1``
    (corners given in any order are sorted, as a drag may go either way), or None for no box. Raises
    ValueError for anything but four finite numbers."""
    if box is None:
        return None
    try:
        values = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        raise ValueError("a box is four numbers x0, y0, x1, y1") from None
    if len(values) != 4:
        raise ValueError(f"a box is four numbers x0, y0, x1, y1, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError("box coordinates must be finite numbers")
    x0, y0, x1, y1 = values
    return np.array([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], dtype=np.float32)


def predict_chosen_many(
    segmenter: Segmenter,
    embedding: Embedding,
    prompts: Sequence[Prompt],
    *,
    multimask: bool = True,
) -> list[MaskCandidate]:
    """The chosen candidate of each :class:`Prompt` on one embedding (its ``mask_choice``, see
    :func:`choose_candidate`).

    Uses the backend's own ``predict_chosen_many`` when it has one (SAM: only the chosen mask is upsampled to
    full size, identical prompts are decoded once); otherwise ``predict`` per prompt and ``choose_candidate``.
    Either way the result of prompt ``i`` is ``choose_candidate(segmenter.predict(...), choice)`` for it alone.
    """
    own = getattr(segmenter, "predict_chosen_many", None)
    if own is not None:
        return own(embedding, prompts, multimask=multimask)
    chosen = []
    for prompt in prompts:
        if prompt.box is None:
            # Point-only prompts keep the original call, which every segmenter (and test double) accepts.
            candidates = segmenter.predict(embedding, prompt.coords, prompt.labels, multimask=multimask)
        else:
            candidates = segmenter.predict(
                embedding, prompt.coords, prompt.labels, box=prompt.box, multimask=multimask
            )
        chosen.append(choose_candidate(candidates, prompt.mask_choice))
    return chosen


def check_prompt(
    embedding: Embedding,
    fingerprint: str,
    point_coords: np.ndarray | None,
    point_labels: np.ndarray | None,
    box: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction request: the embedding must come from the segmenter with ``fingerprint``, and the
    prompt is normalised to ``(float32 Nx2, int32 N)``. At least one point is required unless a valid
    ``box`` is given (then the arrays may be empty; get the box itself from :func:`check_box`)."""
    if embedding.fingerprint != fingerprint:
        raise ValueError("the embedding was made by a different segmenter")
    has_box = check_box(box) is not None
    coords = np.asarray([] if point_coords is None else point_coords, dtype=np.float32).reshape(-1, 2)
    labels = np.asarray([] if point_labels is None else point_labels, dtype=np.int32).reshape(-1)
    if coords.shape[0] == 0 and not has_box:
        raise ValueError("at least one point is required")
    if coords.shape[0] != labels.shape[0]:
        raise ValueError(f"{coords.shape[0]} points but {labels.shape[0]} labels")
    return coords, labels


def validated_prompt(
    embedding: Embedding,
    fingerprint: str,
    point_coords: np.ndarray | None,
    point_labels: np.ndarray | None,
    box: Sequence[float] | np.ndarray | None = None,
    mask_choice: object = "best",
) -> Prompt:
    """A prediction request checked and normalised the way every backend computes on it: ``coords`` float32
    ``Nx2`` and ``labels`` int32 ``N`` (:func:`check_prompt`), ``box`` float32 ``(4,)`` or None
    (:func:`check_box`), ``mask_choice`` "best" or an index (:func:`parse_mask_choice`). Raises ValueError
    like those, in that order."""
    coords, labels = check_prompt(embedding, fingerprint, point_coords, point_labels, box)
    return Prompt(
        coords=coords, labels=labels, box=check_box(box), mask_choice=parse_mask_choice(mask_choice)
    )


#: The values a template's ``mask_choice`` may take besides "best": SAM's three multimask outputs.
MASK_CHOICE_INDEXES = (0, 1, 2)


def parse_mask_choice(value: object) -> str | int:
    """Validate a template's ``mask_choice``: ``"best"`` (None and "" mean it too) or a candidate index 0..2
    (an int or its decimal string). Raises ValueError naming the allowed values."""
    if value is None or value == "" or value == "best":
        return "best"
    if isinstance(value, bool):
        raise ValueError("mask_choice must be 'best' or 0, 1, 2")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int | np.integer) and int(value) in MASK_CHOICE_INDEXES:
        return int(value)
    raise ValueError(f"mask_choice must be 'best' or 0, 1, 2, got {value!r}")


def choose_candidate(candidates: Sequence[MaskCandidate], mask_choice: object = "best") -> MaskCandidate:
    """The candidate a template's ``mask_choice`` designates.

    ``"best"``: the highest score (ties: lowest index, as the segmenters sort). An index ``i``: the candidate
    whose :attr:`MaskCandidate.index` is ``i`` — SAM's outputs are ordered by granularity, so the same index
    picks the same kind of mask on every image. When the segmenter produced no candidate with that index
    (single-mask output, SAM-HQ's one fused mask) the best candidate is used. Raises ValueError for an invalid
    ``mask_choice`` or no candidates.
    """
    choice = parse_mask_choice(mask_choice)
    if not candidates:
        raise ValueError("no mask candidates to choose from")
    best = min(
        range(len(candidates)),
        key=lambda i: (-candidates[i].score, candidates[i].index if candidates[i].index is not None else i),
    )
    if choice == "best":
        return candidates[best]
    for candidate in candidates:
        if candidate.index == choice:
            return candidate
    return candidates[best]
