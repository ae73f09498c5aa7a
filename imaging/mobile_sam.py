"""MobileSAM (``mobilesam-mirror``, module ``mobile_sam``): a TinyViT image encoder with SAM's decoder.

The model is built from ``mobile_sam.modeling`` exactly like ``mobile_sam.build_sam.build_sam_vit_t``, with
the TinyViT configuration read off the checkpoint's tensors (:func:`imaging.families.infer_tinyvit_config`;
the published one is TinyViT-5M). Encode and predict are :class:`imaging.sam_like.SamLikeSegmenter`'s, which
mirror MobileSAM's ``SamPredictor``: results equal it bit for bit on the same float16-rounded features.
"""

from __future__ import annotations

from typing import Any

import torch
from mobile_sam.modeling import MaskDecoder, PromptEncoder, Sam, TinyViT, TwoWayTransformer
from mobile_sam.utils.transforms import ResizeLongestSide

from imaging.families import FamilyInfo, TinyVitConfig
from imaging.sam_like import SamLikeSegmenter


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
    prompt_embed_dim, image_size = 256, 1024
    image_embedding_size = image_size // 16
    model = Sam(
        image_encoder=build_tinyvit(config),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(image_embedding_size, image_embedding_size),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_embed_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    model.eval()
    return model


class MobileSamSegmenter(SamLikeSegmenter):
    """MobileSAM behind the :class:`~imaging.segmenter.Segmenter` protocol. Features: ``image_embed``."""

    family = "mobile_sam"
    method_version = "mobilesam-v1-fp16"

    def _build(self, info: FamilyInfo) -> torch.nn.Module:
        return build_mobile_sam_model(info.config)

    def _transform(self, image_size: int) -> Any:
        return ResizeLongestSide(image_size)

    def _encode_tensors(self, preprocessed: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image_embed": self.model.image_encoder(preprocessed)}

    def _decode(self, features, sparse, dense, multimask):
        low_res, iou = self.model.mask_decoder(
            image_embeddings=features["image_embed"],
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        return low_res, iou, True
