"""SAM-HQ (``segment-anything-hq``): SAM with a high-quality output token fed by early encoder features.

The model is built from ``segment_anything_hq.modeling`` exactly like its ``build_sam`` (``_build_sam`` for
vit_b/l/h and custom ViTs, ``build_sam_vit_t`` for the TinyViT ``vit_tiny``), with the encoder read off the
checkpoint's tensors. The embedding holds what ``MaskDecoderHQ`` needs: ``image_embed`` (``1x256x64x64``) and
``interm`` (the first global block's output, ``1x64x64xD``; TinyViT: its second stage), both float16.

Prediction equals ``SamPredictorHQ.predict`` (``hq_token_only=False``, its default) bit for bit on the same
float16-rounded features. As upstream, multimask output is ONE mask: the best of SAM's three tokens plus
the HQ token's mask, so candidates carry ``index=None`` and a template's ``mask_choice`` index falls back to
that mask (:func:`imaging.segmenter.choose_candidate`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from segment_anything_hq.modeling import (
    ImageEncoderViT,
    MaskDecoderHQ,
    PromptEncoder,
    Sam,
    TinyViT,
    TwoWayTransformer,
)
from segment_anything_hq.utils.transforms import ResizeLongestSide

from imaging.families import FamilyInfo, TinyVitConfig
from imaging.mobile_sam import build_tinyvit
from imaging.sam import SamConfig
from imaging.sam_like import SamLikeSegmenter


def build_sam_hq_model(config: SamConfig | TinyVitConfig) -> Sam:
    """An untrained, eval-mode SAM-HQ with ``config``'s encoder (ViT or TinyViT), as its builders do."""
    prompt_embed_dim, image_size = 256, 1024
    if isinstance(config, TinyVitConfig):
        encoder = build_tinyvit(config, TinyViT)
        vit_dim = config.embed_dims[2]  # MaskDecoderHQ fuses TinyViT's second-stage output
    else:
        encoder = ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=config.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=config.encoder_global_attn_indexes,
            window_size=config.window_size,
            out_chans=config.prompt_embed_dim,
        )
        vit_dim = config.encoder_embed_dim
        image_size = config.image_size
    image_embedding_size = image_size // 16
    model = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(image_embedding_size, image_embedding_size),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_embed_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            vit_dim=vit_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    model.eval()
    return model


class SamHqSegmenter(SamLikeSegmenter):
    """SAM-HQ behind the :class:`~imaging.segmenter.Segmenter` protocol. Features: ``image_embed``,
    ``interm``."""

    family = "sam_hq"
    method_version = "samhq-v1-fp16"

    def _build(self, info: FamilyInfo) -> torch.nn.Module:
        return build_sam_hq_model(info.config)

    def _transform(self, image_size: int) -> Any:
        return ResizeLongestSide(image_size)

    def _encode_tensors(self, preprocessed: torch.Tensor) -> dict[str, torch.Tensor]:
        image_embed, interm = self.model.image_encoder(preprocessed)
        # MaskDecoderHQ reads only the first intermediate embedding.
        return {"image_embed": image_embed, "interm": interm[0]}

    def _decode(self, features, sparse, dense, multimask):
        low_res, iou = self.model.mask_decoder(
            image_embeddings=features["image_embed"],
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            hq_token_only=False,
            interm_embeddings=[features["interm"]],
        )
        return low_res, iou, False
