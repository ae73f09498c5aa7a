"""SAM 2 / 2.1 (``sam2``): the Hiera image encoder with SAM 2's prompt encoder and mask decoder.

The model is built by the package's own ``sam2.build_sam.build_sam2`` from the config file of the size read
off the checkpoint's tensors (:func:`imaging.families.infer_sam2_config`), then loaded strictly. Encode and
predict mirror ``SAM2ImagePredictor.set_image`` / ``predict`` step by step (``SAM2Transforms``: a square
resize to 1024 and ImageNet normalisation; ``forward_image``, ``_prepare_backbone_features``, the
``no_mem_embed`` addition; prompts normalised by the original size; the box as two labelled corner points
before the clicks), without per-image state on the object. The embedding holds what the decoder needs, as
float16: ``image_embed`` (``1x256x64x64``) and the two high-resolution feature maps ``high_res_0``
(``1x32x256x256``) and ``high_res_1`` (``1x64x128x128``). Results equal ``SAM2ImagePredictor`` bit for bit on
the same float16-rounded features.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imaging.errors import CheckpointError
from imaging.families import Sam2Config, detect_family, read_checkpoint
from imaging.sam_like import autocast_dtype, check_rgb, load_strict, sorted_candidates
from imaging.segmenter import Embedding, MaskCandidate, check_box, check_prompt

_METHOD_VERSION = "sam2-v1-fp16"
# hydra's global config store is not thread-safe; one build at a time.
_BUILD_LOCK = threading.Lock()


def build_sam2_model(config: Sam2Config, *, device: str = "cpu") -> torch.nn.Module:
    """An untrained, eval-mode SAM 2 of ``config``'s size, through ``sam2.build_sam.build_sam2`` (with its
    default post-processing overrides, as ``SAM2ImagePredictor.from_pretrained`` builds it)."""
    import sam2  # noqa: F401 - initialises hydra's config module "sam2"
    from sam2.build_sam import build_sam2

    with _BUILD_LOCK:
        return build_sam2(config.config_file, ckpt_path=None, device=device, mode="eval")


class Sam2Segmenter:
    """SAM 2 / 2.1 behind the :class:`~imaging.segmenter.Segmenter` protocol (see the module docstring)."""

    backend = "sam"
    family = "sam2"
    cacheable = True

    def __init__(self, checkpoint_path: str | Path, *, device: str | None = None) -> None:
        from sam2.utils.transforms import SAM2Transforms

        from imaging.sam import checkpoint_fingerprint, resolve_device

        self.checkpoint_path = Path(checkpoint_path)
        state_dict = read_checkpoint(self.checkpoint_path)
        info = detect_family(state_dict)
        if info.family != "sam2":
            raise CheckpointError(
                f"checkpoint {self.checkpoint_path.name} is a {info.label} checkpoint, not SAM 2"
            )
        self.info = info
        self.config: Sam2Config = info.config
        self.model_type: str | None = info.size
        self.label = info.label
        self.device = resolve_device(device)
        model = build_sam2_model(self.config, device="cpu")
        load_strict(model, state_dict, name=self.checkpoint_path.name, label=info.label)
        del state_dict
        self.model = model.to(self.device).eval()
        self.resolution = int(self.model.image_size)
        self.transforms = SAM2Transforms(
            resolution=self.resolution, mask_threshold=0.0, max_hole_area=0.0, max_sprinkle_area=0.0
        )
        r = self.resolution
        self._feat_sizes = [(r // 4, r // 4), (r // 8, r // 8), (r // 16, r // 16)]
        self.fingerprint = f"{_METHOD_VERSION}:sam{self.config.version}:{info.size}:{checkpoint_fingerprint(self.checkpoint_path)}"
        self.encode_calls = 0
        self._count_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Sam2Segmenter({self.checkpoint_path.name!r}, model={self.label}, device={self.device})"

    # -- encode ------------------------------------------------------------------------------------------

    def _features(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        backbone_out = self.model.forward_image(batch)
        _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        n = batch.shape[0]
        feats = [
            feat.permute(1, 2, 0).view(n, -1, *size)
            for feat, size in zip(vision_feats[::-1], self._feat_sizes[::-1], strict=True)
        ][::-1]
        return {"image_embed": feats[-1], "high_res_0": feats[0], "high_res_1": feats[1]}

    def _embedding(self, outputs: dict[str, torch.Tensor], row: int, original: tuple[int, int]) -> Embedding:
        arrays = {k: v[row : row + 1].to(torch.float16).cpu().numpy() for k, v in outputs.items()}
        return Embedding(
            features=arrays,
            original_size=original,
            input_size=(self.resolution, self.resolution),
            fingerprint=self.fingerprint,
        )

    def _count(self, n: int) -> None:
        with self._count_lock:
            self.encode_calls += n

    def encode(self, rgb: np.ndarray) -> Embedding:
        """Run the image encoder (fp32); the decoder's inputs are returned as float16 named arrays."""
        check_rgb(rgb)
        original = (int(rgb.shape[0]), int(rgb.shape[1]))
        batch = self.transforms(rgb)[None, ...].to(self.device)
        with self._encode_lock, torch.inference_mode():
            embedding = self._embedding(self._features(batch), 0, original)
        self._count(1)
        return embedding

    def encode_batch(self, images: Sequence[np.ndarray], *, batch_size: int = 4) -> list[Embedding]:
        """Batches of ``batch_size`` under bf16/fp16 autocast on CUDA; a loop of :meth:`encode` on CPU."""
        dtype = autocast_dtype(self.device)
        if dtype is None:
            return [self.encode(rgb) for rgb in images]
        step = max(1, int(batch_size))
        out: list[Embedding] = []
        for start in range(0, len(images), step):
            chunk = list(images[start : start + step])
            for rgb in chunk:
                check_rgb(rgb)
            batch = self.transforms.forward_batch(chunk).to(self.device)
            with self._encode_lock, torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
                outputs = self._features(batch)
                out.extend(
                    self._embedding(outputs, i, (int(rgb.shape[0]), int(rgb.shape[1])))
                    for i, rgb in enumerate(chunk)
                )
            self._count(len(chunk))
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
        """Masks for a point and/or box prompt, as ``SAM2ImagePredictor.predict`` computes them, best
        predicted IoU first."""
        coords, labels = check_prompt(embedding, self.fingerprint, point_coords, point_labels, box)
        box_arr = check_box(box)
        orig_hw = embedding.original_size
        with torch.inference_mode():
            points = None
            if coords.shape[0]:
                coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)
                coords_t = self.transforms.transform_coords(coords_t, normalize=True, orig_hw=orig_hw)
                labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)
                points = (coords_t[None, ...], labels_t[None, ...])
            if box_arr is not None:
                box_t = torch.as_tensor(box_arr, dtype=torch.float, device=self.device)
                box_coords = self.transforms.transform_boxes(box_t, normalize=True, orig_hw=orig_hw)
                box_coords = box_coords.reshape(-1, 2, 2)
                box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=self.device)
                # As upstream: the box's two corners go before the clicks.
                if points is not None:
                    points = (
                        torch.cat([box_coords, points[0]], dim=1),
                        torch.cat([box_labels, points[1]], dim=1),
                    )
                else:
                    points = (box_coords, box_labels)
            arrays = embedding.arrays()
            feats = {
                k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device).float()
                for k, v in arrays.items()
            }
            sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=None, masks=None)
            low_res, iou, _, _ = self.model.sam_mask_decoder(
                image_embeddings=feats["image_embed"],
                image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=False,
                high_res_features=[feats["high_res_0"], feats["high_res_1"]],
            )
            masks = self.transforms.postprocess_masks(low_res, orig_hw)
            masks = (masks > 0.0)[0].cpu().numpy()
            scores = iou[0].float().cpu().numpy()
        return sorted_candidates(masks, scores, indexed=multimask)
