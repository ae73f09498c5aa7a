"""MobileSAM (``mobilesam-mirror``, module ``mobile_sam``): a TinyViT image encoder with SAM's decoder.

The model is built from ``mobile_sam.modeling`` exactly like ``mobile_sam.build_sam.build_sam_vit_t``, with
the TinyViT configuration read off the checkpoint's tensors (:func:`imaging.families.infer_tinyvit_config`;
the published one is TinyViT-5M). Encode and predict are :class:`imaging.sam_like.SamLikeSegmenter`'s, which
mirror MobileSAM's ``SamPredictor``: results equal it on the same float16-rounded features, to float32
rounding (the decoder runs in :func:`imaging.sam.use_token_layout_mask_decoder`'s layout on the CPU).
"""

from __future__ import annotations

from typing import Any

import mobile_sam.modeling
import torch
from mobile_sam.modeling import Sam, TinyViT
from mobile_sam.utils.transforms import ResizeLongestSide

from imaging.families import TinyVitConfig
from imaging.sam_like import SamLikeSegmenter, build_sam_like_model, mask_decoder_inputs


def build_tinyvit(config: TinyVitConfig, tinyvit_class: Any = TinyViT) -> torch.nn.Module:
    """The TinyViT encoder of ``build_sam_vit_t`` (MobileSAM's and SAM-HQ's copies take the same
    arguments), with ``config``'s sizes."""
    return tinyvit_class(
        img_size=1024,
        in_chans=3,
        num_classes=1000,
        embed_dims=list(config.embed_dims),
        depths=list(config.depths),
        num_heads=list(config.num_heads),
        window_sizes=list(config.window_sizes),
        mlp_ratio=config.mlp_ratio,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=config.mbconv_expand_ratio,
        local_conv_size=config.local_conv_size,
        layer_lr_decay=0.8,
    )


def build_mobile_sam_model(config: TinyVitConfig) -> Sam:
    """An untrained, eval-mode MobileSAM with ``config``'s encoder, as ``build_sam_vit_t`` builds it."""
    return build_sam_like_model(mobile_sam.modeling, build_tinyvit(config))


class MobileSamSegmenter(SamLikeSegmenter):
    """MobileSAM behind the :class:`~imaging.segmenter.Segmenter` protocol. Features: ``image_embed``."""

    family = "mobile_sam"
    transform_class = ResizeLongestSide
    build_model = staticmethod(build_mobile_sam_model)

    def _encode_tensors(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image_embed": self.model.image_encoder(batch)}

    def _decode(self, features, sparse, dense, multimask):
        low_res, iou = self.model.mask_decoder(
            **mask_decoder_inputs(features["image_embed"], self._dense_pe(), sparse, dense, multimask)
        )
        return low_res, iou, True
