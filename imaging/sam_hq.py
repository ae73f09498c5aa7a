"""SAM-HQ (``segment-anything-hq``): SAM with a high-quality output token fed by early encoder features.

The model is built from ``segment_anything_hq.modeling`` exactly like its ``build_sam`` (``_build_sam`` for
vit_b/l/h and custom ViTs, ``build_sam_vit_t`` for the TinyViT ``vit_tiny``), with the encoder read off the
checkpoint's tensors. The embedding holds what ``MaskDecoderHQ`` needs: ``image_embed`` (``1x256x64x64``) and
``interm`` (the first global block's output, ``1x64x64xD``; TinyViT: its second stage), both float16.

Prediction equals ``SamPredictorHQ.predict`` (``hq_token_only=False``, its default) on the same
float16-rounded features (the same modules and steps: bit for bit where the CPU's kernels see the same
layouts; the fidelity tests allow for kernel rounding). As upstream, multimask output is ONE mask: the best of SAM's three tokens plus
the HQ token's mask, so candidates carry ``index=None`` and a template's ``mask_choice`` index falls back to
that mask (:func:`imaging.segmenter.choose_candidate`).
"""

from __future__ import annotations

import segment_anything_hq.modeling
import torch
from segment_anything_hq.modeling import ImageEncoderViT, MaskDecoderHQ, Sam, TinyViT
from segment_anything_hq.utils.transforms import ResizeLongestSide

from imaging.families import TinyVitConfig
from imaging.mobile_sam import build_tinyvit
from imaging.sam import SamConfig
from imaging.sam_like import SamLikeSegmenter, build_sam_like_model, build_vit_encoder, mask_decoder_inputs


def build_sam_hq_model(config: SamConfig | TinyVitConfig) -> Sam:
    """An untrained, eval-mode SAM-HQ with ``config``'s encoder (ViT or TinyViT), as its builders do."""
    if isinstance(config, TinyVitConfig):
        # MaskDecoderHQ fuses TinyViT's second-stage output.
        encoder, vit_dim, image_size = build_tinyvit(config, TinyViT), config.embed_dims[2], 1024
    else:
        encoder, vit_dim = build_vit_encoder(config, ImageEncoderViT), config.encoder_embed_dim
        image_size = config.image_size
    return build_sam_like_model(
        segment_anything_hq.modeling,
        encoder,
        decoder_class=MaskDecoderHQ,
        image_size=image_size,
        vit_dim=vit_dim,
    )


class SamHqSegmenter(SamLikeSegmenter):
    """SAM-HQ behind the :class:`~imaging.segmenter.Segmenter` protocol. Features: ``image_embed``,
    ``interm``."""

    family = "sam_hq"
    transform_class = ResizeLongestSide
    build_model = staticmethod(build_sam_hq_model)

    def _encode_tensors(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        image_embed, interm = self.model.image_encoder(batch)
        # MaskDecoderHQ reads only the first intermediate embedding.
        return {"image_embed": image_embed, "interm": interm[0]}

    def _decode(self, features, sparse, dense, multimask):
        low_res, iou = self.model.mask_decoder(
            **mask_decoder_inputs(features["image_embed"], self._dense_pe(), sparse, dense, multimask),
            hq_token_only=False,
            interm_embeddings=[features["interm"]],
        )
        return low_res, iou, False
