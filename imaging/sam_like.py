"""The shared body of the segmenters whose package follows segment-anything's API (MobileSAM, SAM-HQ).

Those packages ship their own copies of ``Sam``, ``PromptEncoder``, ``ResizeLongestSide``...; a subclass of
:class:`SamLikeSegmenter` builds the model from its package's modules (:meth:`_build`), says what the encoder
returns (:meth:`_encode_tensors`) and how the decoder is called (:meth:`_decode`). The rest mirrors
``SamPredictor.set_image`` / ``predict`` step by step, like :class:`imaging.sam.SamSegmenter` (which stays
separate: it is tuned on its own), without per-image state on the object: the :class:`Embedding` carries the
features (float16, named arrays) and both sizes, so any number of threads can predict concurrently.

``encode_batch`` runs the encoder on several images at once on CUDA, under fp16 autocast (bf16 where the GPU
supports it), and simply loops on CPU, where batching gains nothing and autocast would only slow it down.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imaging.errors import CheckpointError
from imaging.families import FamilyInfo, detect_family, read_checkpoint
from imaging.segmenter import Embedding, MaskCandidate, check_box, check_prompt


def check_rgb(rgb: Any) -> None:
    """Raise ValueError unless ``rgb`` is an ``HxWx3`` uint8 array."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("expected an HxWx3 uint8 RGB array")


def autocast_dtype(device: str) -> torch.dtype | None:
    """The autocast dtype for batched CUDA encodes (bf16 when supported, else fp16); None on CPU."""
    if not str(device).startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_strict(model: torch.nn.Module, state_dict: Mapping[str, Any], *, name: str, label: str) -> None:
    """``load_state_dict(strict=True)`` with a short :class:`CheckpointError` on any mismatch."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
        raise CheckpointError(
            f"checkpoint {name} does not match the inferred {label} architecture: {first}"
        ) from None


def sorted_candidates(masks: np.ndarray, scores: np.ndarray, *, indexed: bool) -> list[MaskCandidate]:
    """Candidates best score first (ties: model order); ``index`` is the model's output position when
    ``indexed`` (three multimask outputs), else None."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return [
        MaskCandidate(
            mask=np.ascontiguousarray(masks[i]), score=float(scores[i]), index=i if indexed else None
        )
        for i in order
    ]


def encode_batch_plain(
    segmenter: Any, images: Sequence[np.ndarray], *, batch_size: int = 4
) -> list[Embedding]:
    """``encode_batch`` for a segmenter with segment-anything's API whose encoder returns one tensor (SAM 1's
    :class:`~imaging.sam.SamSegmenter`): batches under autocast on CUDA, ``segmenter.encode`` per image on
    CPU. Features are plain float16 arrays, SAM 1's cache format."""
    dtype = autocast_dtype(segmenter.device)
    if dtype is None:
        return [segmenter.encode(rgb) for rgb in images]
    step = max(1, int(batch_size))
    out: list[Embedding] = []
    for start in range(0, len(images), step):
        prepared = []
        for rgb in images[start : start + step]:
            check_rgb(rgb)
            input_image = segmenter.transform.apply_image(rgb)
            tensor = torch.as_tensor(input_image, device=segmenter.device).permute(2, 0, 1).contiguous()[None]
            prepared.append((tensor, (int(rgb.shape[0]), int(rgb.shape[1])), tuple(tensor.shape[-2:])))
        batch = torch.cat([segmenter.model.preprocess(t) for t, _, _ in prepared], dim=0)
        with segmenter._encode_lock, torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
            features = segmenter.model.image_encoder(batch).to(torch.float16).cpu().numpy()
        for i, (_, original, input_size) in enumerate(prepared):
            out.append(
                Embedding(
                    features=features[i : i + 1],
                    original_size=original,
                    input_size=(int(input_size[0]), int(input_size[1])),
                    fingerprint=segmenter.fingerprint,
                )
            )
        with segmenter._count_lock:
            segmenter.encode_calls += len(prepared)
    return out


class SamLikeSegmenter:
    """Base of the segment-anything-API families (see the module docstring). Thread-safe."""

    backend = "sam"
    cacheable = True
    family = ""  # set by subclasses
    method_version = ""  # set by subclasses: part of the fingerprint

    def __init__(self, checkpoint_path: str | Path, *, device: str | None = None) -> None:
        from imaging.sam import checkpoint_fingerprint, resolve_device

        self.checkpoint_path = Path(checkpoint_path)
        state_dict = read_checkpoint(self.checkpoint_path)
        info: FamilyInfo = detect_family(state_dict)
        if info.family != self.family:
            raise CheckpointError(
                f"checkpoint {self.checkpoint_path.name} is a {info.label} checkpoint, not {self.family}"
            )
        self.info = info
        self.config = info.config
        self.model_type: str | None = info.size
        self.label = info.label
        self.device = resolve_device(device)
        model = self._build(info)
        load_strict(model, state_dict, name=self.checkpoint_path.name, label=info.label)
        del state_dict
        self.model = model.to(self.device).eval()
        self.transform = self._transform(self.model.image_encoder.img_size)
        self.fingerprint = (
            f"{self.method_version}:{self.family}:{info.size}:{checkpoint_fingerprint(self.checkpoint_path)}"
        )
        self.encode_calls = 0
        self._count_lock = threading.Lock()
        # One encoder forward at a time (see SamSegmenter): concurrent forwards only oversubscribe the CPU.
        self._encode_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.checkpoint_path.name!r}, model={self.label}, device={self.device})"
        )

    # -- family hooks ------------------------------------------------------------------------------------

    def _build(self, info: FamilyInfo) -> torch.nn.Module:
        raise NotImplementedError

    def _transform(self, image_size: int) -> Any:
        raise NotImplementedError

    def _encode_tensors(self, preprocessed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoder outputs for a ``B x 3 x S x S`` batch, as named ``B x ...`` tensors."""
        raise NotImplementedError

    def _decode(
        self, features: dict[str, torch.Tensor], sparse: torch.Tensor, dense: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """``(low-res mask logits 1xCxhxw, iou 1xC, indexed)``; ``indexed``: C outputs in token order."""
        raise NotImplementedError

    # -- encode ------------------------------------------------------------------------------------------

    def _prepare(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        check_rgb(rgb)
        original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        input_image = self.transform.apply_image(rgb)
        tensor = torch.as_tensor(input_image, device=self.device).permute(2, 0, 1).contiguous()[None, :, :, :]
        input_size = (int(tensor.shape[-2]), int(tensor.shape[-1]))
        return tensor, original_size, input_size

    def _embedding(
        self,
        outputs: dict[str, torch.Tensor],
        row: int,
        original: tuple[int, int],
        input_size: tuple[int, int],
    ) -> Embedding:
        arrays = {k: v[row : row + 1].to(torch.float16).cpu().numpy() for k, v in outputs.items()}
        return Embedding(
            features=arrays, original_size=original, input_size=input_size, fingerprint=self.fingerprint
        )

    def _count(self, n: int) -> None:
        with self._count_lock:
            self.encode_calls += n

    def encode(self, rgb: np.ndarray) -> Embedding:
        """Run the image encoder (fp32); features are returned as float16 named arrays."""
        tensor, original_size, input_size = self._prepare(rgb)
        with self._encode_lock, torch.inference_mode():
            outputs = self._encode_tensors(self.model.preprocess(tensor))
            embedding = self._embedding(outputs, 0, original_size, input_size)
        self._count(1)
        return embedding

    def encode_batch(self, images: Sequence[np.ndarray], *, batch_size: int = 4) -> list[Embedding]:
        """Encode several images: batches of ``batch_size`` under autocast on CUDA; a loop of
        :meth:`encode` on CPU (same results as calling it per image)."""
        dtype = autocast_dtype(self.device)
        if dtype is None:
            return [self.encode(rgb) for rgb in images]
        out: list[Embedding] = []
        for start in range(0, len(images), max(1, int(batch_size))):
            prepared = [self._prepare(rgb) for rgb in images[start : start + max(1, int(batch_size))]]
            batch = torch.cat([self.model.preprocess(t) for t, _, _ in prepared], dim=0)
            with self._encode_lock, torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
                outputs = self._encode_tensors(batch)
                out.extend(self._embedding(outputs, i, o, s) for i, (_, o, s) in enumerate(prepared))
            self._count(len(prepared))
        return out

    # -- predict -----------------------------------------------------------------------------------------

    def predict(
        self,
        embedding: Embedding,
        point_coords: np.ndarray | None,
        point_labels: np.ndarray | None,
        box: Any = None,
        *,
        multimask: bool = True,
    ) -> list[MaskCandidate]:
        """Masks for a point and/or box prompt, as the package's ``SamPredictor.predict`` computes them on the
        same (float16-rounded) features, best predicted IoU first."""
        coords, labels = check_prompt(embedding, self.fingerprint, point_coords, point_labels, box)
        box_arr = check_box(box)
        with torch.inference_mode():
            points = None
            if coords.shape[0]:
                coords_t = self.transform.apply_coords(coords, embedding.original_size)
                coords_torch = torch.as_tensor(coords_t, dtype=torch.float, device=self.device)[None, :, :]
                labels_torch = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None, :]
                points = (coords_torch, labels_torch)
            boxes = None
            if box_arr is not None:
                box_t = self.transform.apply_boxes(box_arr, embedding.original_size)
                boxes = torch.as_tensor(box_t, dtype=torch.float, device=self.device)[None, :]
            features = {
                k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device).float()
                for k, v in embedding.arrays().items()
            }
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
            low_res, iou, indexed = self._decode(features, sparse, dense, multimask)
            masks = self.model.postprocess_masks(low_res, embedding.input_size, embedding.original_size)
            masks = (masks > self.model.mask_threshold)[0].cpu().numpy()
            scores = iou[0].float().cpu().numpy()
        return sorted_candidates(masks, scores, indexed=indexed and multimask)
