"""SAM 2 / 2.1 (``sam2``): the Hiera image encoder with SAM 2's prompt encoder and mask decoder.

The model is built by the package's own ``sam2.build_sam.build_sam2`` from the config file of the size read
off the checkpoint's tensors (:func:`imaging.families.infer_sam2_config`), then loaded strictly. Encode and
predict mirror ``SAM2ImagePredictor.set_image`` / ``predict`` step by step (``SAM2Transforms``: a square
resize to 1024 and ImageNet normalisation; ``forward_image``, ``_prepare_backbone_features``, the
``no_mem_embed`` addition; prompts normalised by the original size; the box as two labelled corner points
before the clicks), without per-image state on the object. The embedding holds what the decoder needs, as
float16: ``image_embed`` (``1x256x64x64``) and the two high-resolution feature maps ``high_res_0``
(``1x32x256x256``) and ``high_res_1`` (``1x64x128x128``). Results equal ``SAM2ImagePredictor`` on the same
float16-rounded features (the same modules and steps: bit for bit where the CPU's kernels see the same
layouts; the fidelity tests allow for kernel rounding).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from imaging.families import Sam2Config
from imaging.sam_like import CheckpointSegmenter, mask_decoder_inputs, sorted_candidates
from imaging.segmenter import Embedding, MaskCandidate, Prompt

# hydra's global config store is not thread-safe; one build at a time.
_BUILD_LOCK = threading.Lock()


def build_sam2_model(config: Sam2Config, *, device: str = "cpu") -> torch.nn.Module:
    """An untrained, eval-mode SAM 2 of ``config``'s size, through ``sam2.build_sam.build_sam2`` (with its
    default post-processing overrides, as ``SAM2ImagePredictor.from_pretrained`` builds it)."""
    import sam2  # noqa: F401 - initialises hydra's config module "sam2"
    from sam2.build_sam import build_sam2

    with _BUILD_LOCK:
        return build_sam2(config.config_file, ckpt_path=None, device=device, mode="eval")


class Sam2Segmenter(CheckpointSegmenter):
    """SAM 2 / 2.1 behind the :class:`~imaging.segmenter.Segmenter` protocol (see the module docstring).
    Features: ``image_embed``, ``high_res_0``, ``high_res_1``."""

    family = "sam2"
    build_model = staticmethod(build_sam2_model)  # on the CPU, moved to the device once loaded

    def _prepare_transforms(self) -> None:
        from sam2.utils.transforms import SAM2Transforms

        self.resolution = int(self.model.image_size)
        self.transforms = SAM2Transforms(
            resolution=self.resolution, mask_threshold=0.0, max_hole_area=0.0, max_sprinkle_area=0.0
        )
        r = self.resolution
        self._feat_sizes = [(r // 4, r // 4), (r // 8, r // 8), (r // 16, r // 16)]

    # -- encode ------------------------------------------------------------------------------------------

    def _preprocess(
        self, images: Sequence[np.ndarray]
    ) -> tuple[torch.Tensor, list[tuple[tuple[int, int], tuple[int, int]]]]:
        """``SAM2Transforms``: a square resize to the model's resolution and ImageNet normalisation."""
        batch = self.transforms.forward_batch(list(images)).to(self.device)
        square = (self.resolution, self.resolution)
        return batch, [((int(rgb.shape[0]), int(rgb.shape[1])), square) for rgb in images]

    def _encode_tensors(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
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

    # -- predict -----------------------------------------------------------------------------------------

    def _predict(self, embedding: Embedding, prompt: Prompt, multimask: bool) -> list[MaskCandidate]:
        """Masks as ``SAM2ImagePredictor.predict`` computes them, best predicted IoU first."""
        coords, labels, box = prompt.coords, prompt.labels, prompt.box
        orig_hw = embedding.original_size
        with torch.inference_mode():
            points = None
            if coords.shape[0]:
                coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)
                coords_t = self.transforms.transform_coords(coords_t, normalize=True, orig_hw=orig_hw)
                labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)
                points = (coords_t[None, ...], labels_t[None, ...])
            if box is not None:
                box_t = torch.as_tensor(box, dtype=torch.float, device=self.device)
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
            feats = self._device_features(embedding)
            sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=None, masks=None)
            image_pe = self.model.sam_prompt_encoder.get_dense_pe()
            low_res, iou, _, _ = self.model.sam_mask_decoder(
                **mask_decoder_inputs(feats["image_embed"], image_pe, sparse, dense, multimask),
                repeat_image=False,
                high_res_features=[feats["high_res_0"], feats["high_res_1"]],
            )
            masks = self.transforms.postprocess_masks(low_res, orig_hw)
            masks = (masks > 0.0)[0].cpu().numpy()
            scores = iou[0].float().cpu().numpy()
        return sorted_candidates(masks, scores, indexed=multimask)
