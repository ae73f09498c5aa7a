"""SAM (segment-anything) backend: checkpoint loading with architecture inference, encode and predict.

The model is rebuilt from segment-anything's own modules (``ImageEncoderViT``, ``PromptEncoder``,
``MaskDecoder``, ``TwoWayTransformer``) exactly like ``build_sam._build_sam``, with the ViT configuration read
off the checkpoint's tensors instead of its file name, so vit_b / vit_l / vit_h and smaller custom ViTs all
load through one path.

Encode and predict mirror ``SamPredictor.set_image`` / ``SamPredictor.predict`` step by step (same
``ResizeLongestSide`` transform, ``preprocess``, encoder, prompt encoder, decoder, ``postprocess_masks``,
threshold), but keep no per-image state on the object: the :class:`~imaging.segmenter.Embedding` carries the
features and both sizes, so any number of threads can predict on any embeddings concurrently. Features are
rounded to float16 right after encoding (the embedding cache's storage form) and prediction always runs on
that rounded form, so a cache hit reproduces the first run bit for bit. Results equal upstream
``SamPredictor`` fed the same float16-rounded features to float32 rounding: the chunked attention and the
token-layout decoder compute upstream's functions in other orders and layouts, so masks are bit for bit
the same on most prompts and a few threshold pixels apart on others (IoU >= 0.999, scores within 1e-4,
tested against upstream on every family).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import pickle
import re
import threading
import types
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import segment_anything.modeling
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, Sam
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from segment_anything.utils.transforms import ResizeLongestSide

from imaging.errors import CheckpointError
from imaging.families import FamilyInfo, refuse_other_family
from imaging.sam_like import (
    SamLikeSegmenter,
    build_sam_like_model,
    build_vit_encoder,
    mask_decoder_inputs,
    sorted_candidates,
)
from imaging.segmenter import Embedding, MaskCandidate, Prompt, validated_prompt

_PATCH_KEY = "image_encoder.patch_embed.proj.weight"
_POS_KEY = "image_encoder.pos_embed"
_NECK_KEY = "image_encoder.neck.0.weight"
_REQUIRED_KEYS = (
    _PATCH_KEY,
    _POS_KEY,
    _NECK_KEY,
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "mask_decoder.iou_token.weight",
    "mask_decoder.mask_tokens.weight",
)
_BLOCK_RE = re.compile(r"^image_encoder\.blocks\.(\d+)\.")
_DECODER_LAYER_RE = re.compile(r"^mask_decoder\.transformer\.layers\.(\d+)\.")

# The published configurations (segment_anything.build_sam): embed dim, depth, heads, global blocks.
KNOWN_MODELS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


@dataclass(frozen=True)
class SamConfig:
    """The architecture of a SAM checkpoint, as inferred by :func:`infer_sam_config`."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    window_size: int
    model_type: str  # "vit_b" | "vit_l" | "vit_h" | "custom"
    patch_size: int = 16
    image_size: int = 1024
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048


def _shape(state_dict: Mapping[str, Any], key: str) -> tuple[int, ...]:
    value = state_dict[key]
    return tuple(int(d) for d in value.shape)


def infer_sam_config(state_dict: Mapping[str, Any]) -> SamConfig:
    """Infer the SAM architecture from a state dict's tensor shapes (values are never read).

    Embed dim and patch size come from ``image_encoder.patch_embed.proj.weight``; the token grid (hence the
    image size) from ``image_encoder.pos_embed``; depth from the number of ``image_encoder.blocks.N``;
    heads from the relative-position table width (``head_dim = rel_pos_h.shape[1]``); global-attention blocks
    from their table height (``2 * grid - 1`` rows, vs ``2 * window - 1`` for windowed blocks). Raises
    :class:`CheckpointError` when the tensors are not those of a SAM model.
    """
    missing = [key for key in _REQUIRED_KEYS if key not in state_dict]
    if missing:
        raise CheckpointError(f"not a SAM checkpoint: tensor {missing[0]!r} is missing")
    try:
        embed_dim, in_chans, patch_h, patch_w = _shape(state_dict, _PATCH_KEY)
        _, grid_h, grid_w, pos_dim = _shape(state_dict, _POS_KEY)
        prompt_dim = _shape(state_dict, _NECK_KEY)[0]
    except ValueError:
        raise CheckpointError("not a SAM checkpoint: unexpected tensor ranks") from None
    if in_chans != 3 or patch_h != patch_w or grid_h != grid_w or pos_dim != embed_dim:
        raise CheckpointError("not a SAM checkpoint: unexpected patch or position embedding shapes")
    blocks = sorted({int(m.group(1)) for key in state_dict if (m := _BLOCK_RE.match(key))})
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointError("not a SAM checkpoint: image encoder blocks are missing or not contiguous")
    head_dims: set[int] = set()
    global_blocks: list[int] = []
    windows: set[int] = set()
    for i in blocks:
        key = f"image_encoder.blocks.{i}.attn.rel_pos_h"
        if key not in state_dict:
            raise CheckpointError(f"unsupported SAM checkpoint: block {i} has no relative position table")
        rows, head_dim = _shape(state_dict, key)
        head_dims.add(head_dim)
        size = (rows + 1) // 2
        if size == grid_h:
            global_blocks.append(i)
        else:
            windows.add(size)
    if len(head_dims) != 1 or len(windows) > 1:
        raise CheckpointError("unsupported SAM checkpoint: blocks disagree on head size or window size")
    head_dim = head_dims.pop()
    if head_dim <= 0 or embed_dim % head_dim:
        raise CheckpointError("not a SAM checkpoint: embed dim is not a multiple of the head size")
    mlp_hidden = _shape(state_dict, "image_encoder.blocks.0.mlp.lin1.weight")[0]
    decoder_layers = {int(m.group(1)) for key in state_dict if (m := _DECODER_LAYER_RE.match(key))}
    decoder_mlp_key = "mask_decoder.transformer.layers.0.mlp.lin1.weight"
    decoder_mlp = _shape(state_dict, decoder_mlp_key)[0] if decoder_mlp_key in state_dict else 2048
    depth = len(blocks)
    heads = embed_dim // head_dim
    globals_t = tuple(global_blocks)
    model_type = "custom"
    for name, known in KNOWN_MODELS.items():
        if known == (embed_dim, depth, heads, globals_t):
            model_type = name
    return SamConfig(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=heads,
        encoder_global_attn_indexes=globals_t,
        # With only global blocks the window size is unused; 14 is SAM's value.
        window_size=windows.pop() if windows else 14,
        model_type=model_type,
        patch_size=patch_h,
        image_size=grid_h * patch_h,
        mlp_ratio=mlp_hidden / embed_dim,
        prompt_embed_dim=prompt_dim,
        decoder_depth=len(decoder_layers) or 2,
        decoder_mlp_dim=decoder_mlp,
    )


def build_sam_model(config: SamConfig) -> Sam:
    """Instantiate an (untrained, eval-mode) SAM with ``config``, exactly like ``build_sam._build_sam``."""
    return build_sam_like_model(
        segment_anything.modeling,
        build_vit_encoder(config, ImageEncoderViT),
        image_size=config.image_size,
        patch_size=config.patch_size,
        prompt_embed_dim=config.prompt_embed_dim,
        decoder_depth=config.decoder_depth,
        decoder_mlp_dim=config.decoder_mlp_dim,
    )


#: Target elements of one attention-score chunk in a global-attention block (64 MB at float32; a chunk is at
#: most twice this).
#: Upstream holds ``heads x 4096 x 4096`` at once (805 MB for vit_b, and as much again for the rel-pos sum
#: and the softmax); a chunk of query rows bounds that to three such chunks whatever the model.
ATTENTION_CHUNK_ELEMENTS = 1 << 24


def _chunked_attention_forward(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """``segment_anything``'s ``Attention.forward``, computed over chunks of query rows.

    Every score row is the same sequence of operations as upstream's (``(q * scale) @ k^T``, then the
    decomposed relative-position terms added in the same order, softmax over the keys, ``@ v``), only fewer
    rows at a time, so peak memory drops from ``heads x HW x HW`` to :data:`ATTENTION_CHUNK_ELEMENTS`.
    The matrix products of fewer rows may be blocked differently by the CPU's GEMM (by ISA and thread
    count), so the output equals upstream's to float32 rounding, bit for bit on some machines only.
    The rel-pos additions are done in place: the same two float additions, without two temporaries.
    """
    B, H, W, _ = x.shape
    qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)
    bh, tokens, dim = q.shape
    # Chunks of at least two query rows (between ``rows`` and ``2 * rows - 1``): with a single row the
    # rel-pos einsum takes another kernel path and rounds differently.
    rows = max(2, ATTENTION_CHUNK_ELEMENTS // max(1, bh * W * tokens))
    count = max(1, H // rows)
    bounds = [H * i // count for i in range(count + 1)]
    key_t = k.transpose(-2, -1)
    if self.use_rel_pos:
        rel_pos_rows = get_rel_pos(H, H, self.rel_pos_h)
        rel_pos_cols = get_rel_pos(W, W, self.rel_pos_w)
    out = torch.empty((bh, tokens, v.shape[-1]), dtype=v.dtype, device=v.device)
    for r0, r1 in itertools.pairwise(bounds):
        q_chunk = q[:, r0 * W : r1 * W]
        attn = (q_chunk * self.scale) @ key_t
        if self.use_rel_pos:
            r_q = q_chunk.reshape(bh, r1 - r0, W, dim)
            rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_pos_rows[r0:r1])
            rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_pos_cols)
            scores = attn.view(bh, r1 - r0, W, H, W)
            scores.add_(rel_h[:, :, :, :, None]).add_(rel_w[:, :, :, None, :])
        attn = attn.softmax(dim=-1)
        torch.matmul(attn, v, out=out[:, r0 * W : r1 * W])
        del attn
    x = out.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
    return self.proj(x)


def use_chunked_global_attention(model: Sam) -> int:
    """Route the global-attention blocks of ``model``'s image encoder through :func:`_chunked_attention_forward`.

    Only this model instance changes (each block's ``attn.forward`` is rebound); segment-anything's class is
    untouched. Windowed blocks keep upstream's forward (their score matrices are small). Returns the number of
    blocks rerouted.
    """
    changed = 0
    for block in model.image_encoder.blocks:
        if getattr(block, "window_size", 0) == 0 and isinstance(block.attn, Attention):
            block.attn.forward = types.MethodType(_chunked_attention_forward, block.attn)
            changed += 1
    return changed


_CHANNELS_LAST = torch.channels_last


@dataclass(frozen=True)
class _PixelwiseUpscaling:
    """``output_upscaling`` (``ConvTranspose2d(k=2, s=2)``, ``LayerNorm2d``, activation,
    ``ConvTranspose2d(k=2, s=2)``, activation) as per-pixel matrices.

    A stride-2 transposed convolution with a 2x2 kernel maps each input pixel to its own 2x2 block of output
    pixels, so it is one matrix product per pixel: ``C_in -> (2, 2, C_out)``, the output channels last. An
    output pixel's channels stay contiguous, so the channel norm is ``layer_norm`` over the last dimension;
    the first map is put in raster order once (runs of 64 channels, cheap), the second never is: the
    hypernetwork product reduces its channels first, and only the few masks are reordered.
    """

    first: torch.Tensor  # C_in x (2 * 2 * C_out), columns (a, b, out channel): the first convolution
    first_bias: torch.Tensor
    norm: torch.nn.Module
    act1: torch.nn.Module
    second: torch.Tensor
    second_bias: torch.Tensor
    act2: torch.nn.Module

    @classmethod
    def of(cls, upscaling: torch.nn.Sequential) -> _PixelwiseUpscaling | None:
        """The matrices of ``upscaling``'s current weights, or None when its structure is not upstream's."""
        if len(upscaling) != 5:
            return None
        conv1, norm, act1, conv2, act2 = upscaling
        for conv in (conv1, conv2):
            if not (
                isinstance(conv, torch.nn.ConvTranspose2d)
                and conv.kernel_size == (2, 2)
                and conv.stride == (2, 2)
                and conv.padding == (0, 0)
                and conv.output_padding == (0, 0)
                and conv.dilation == (1, 1)
                and conv.groups == 1
                and conv.bias is not None
            ):
                return None
        if type(norm).__name__ != "LayerNorm2d" or not hasattr(norm, "eps"):
            return None

        def per_pixel(conv: torch.nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
            weight = conv.weight.detach()  # C_in x C_out x 2 x 2
            return (
                weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous(),
                conv.bias.detach().repeat(4),
            )

        first, first_bias = per_pixel(conv1)
        second, second_bias = per_pixel(conv2)
        return cls(first, first_bias, norm, act1, second, second_bias, act2)

    def __call__(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``HW x C`` image tokens (row-major ``height x width``) to ``16 HW x C/8`` upscaled pixels in the
        order ``(I, J, a2, b2)``: pixel ``(2I + a2, 2J + b2)`` of the ``4H x 4W`` map."""
        x = torch.addmm(self.first_bias, tokens, self.first)
        # (i, j, a, b, c) -> (i, a, j, b, c): the 2H x 2W map in raster order (runs of C/4 channels).
        x = x.view(height, width, 2, 2, -1).permute(0, 2, 1, 3, 4).reshape(4 * height * width, -1)
        x = self.act1(F.layer_norm(x, x.shape[-1:], self.norm.weight, self.norm.bias, self.norm.eps))
        x = torch.addmm(self.second_bias, x, self.second)
        return self.act2(x.view(-1, self.second.shape[1] // 4))


def _predict_masks_in_token_layout(
    self: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``segment_anything``'s ``MaskDecoder.predict_masks`` arranged for the CPU: the same function, its
    result equal to upstream's to float32 rounding (IoU >= 0.999 of the thresholded masks, tested), in
    about half of its time (vit_b, one thread; with the attentions that :func:`use_token_layout_mask_decoder`
    installs beside it).

    Upstream hands the transformer ``B x C x H x W`` maps that it views as ``B x HW x C`` tokens, so every
    image-side addition and projection reads memory with a 16 KB stride; its upscaling runs two transposed
    convolutions and a channel norm through layout copies larger than their arithmetic. Here the image-side
    maps are channels-last (their token view is contiguous; the segmenter hands the features over so), and
    the upscaling is per-pixel matrix products (:class:`_PixelwiseUpscaling`) with the hypernetwork product
    taken per pixel, so only the masks are reordered. That is the path of one prompt; a batch of prompts
    (which the segmenters never send: they decode prompt by prompt, so a mask never depends on which other
    prompts share its batch) runs upstream's ``predict_masks``.
    """
    if sparse_prompt_embeddings.shape[0] != 1:
        return type(self).predict_masks(
            self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
    output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0).unsqueeze(0)
    tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
    # One prompt: upstream's repeat_interleave over the batch is the identity.
    src = (image_embeddings + dense_prompt_embeddings).contiguous(memory_format=_CHANNELS_LAST)
    _, _, h, w = src.shape

    hs, keys = self.transformer(src, _channels_last_pe(self, image_pe), tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : (1 + self.num_mask_tokens), :]
    pixels = self._pixelwise_upscaling(keys[0], h, w)
    hyper_in = torch.stack(
        [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(self.num_mask_tokens)],
        dim=1,
    )
    masks = torch.mm(hyper_in[0], pixels.T).view(-1, 2 * h, 2 * w, 2, 2)
    masks = masks.permute(0, 1, 3, 2, 4).reshape(1, -1, 4 * h, 4 * w)
    return masks, self.iou_prediction_head(iou_token_out)


def _heads_of(linear: torch.nn.Linear, heads: int, *, output_side: bool) -> torch.Tensor:
    """A projection's weight split by attention head: ``heads x d x C`` for an input projection
    (``C -> heads * d``), ``C x heads x d`` for the output projection (``heads * d -> C``)."""
    weight = linear.weight
    if output_side:
        return weight.view(weight.shape[0], heads, -1)
    return weight.view(heads, -1, weight.shape[1])


def _few_tokens(attention: torch.nn.Module, count: int) -> bool:
    """Whether the factored forms below do less work than upstream's: ``heads x count`` prompt tokens stand
    in for the ``internal_dim`` channels of each projection of the image side."""
    return attention.num_heads * count < attention.internal_dim


def _token_to_image_attention_forward(
    self: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """The decoder ``Attention.forward`` for a few prompt tokens (``q``) attending to the image tokens
    (``k``, ``v``), with the image side never projected.

    Per head, ``q_h (k W_h + b_h)^T = (q_h W_h^T) k^T + q_h . b_h``: the second term is the same for every
    key, so the softmax drops it; and as each row of the softmax sums to one, ``attn (v V_h + c_h) =
    (attn v) V_h + c_h``. Upstream's two ``HW x C -> HW x C/2`` projections become two products of
    ``heads x tokens`` rows with the ``HW x C`` image (vit_b: 56 rows against 128 channels, 44% of the
    work). The same function as upstream's, to float32 rounding; more tokens than that fall back to it."""
    if not _few_tokens(self, q.shape[1]):
        return type(self).forward(self, q, k, v)
    heads = self.num_heads
    queries = self._separate_heads(self.q_proj(q), heads)  # B x heads x Nq x d
    batch, _, count, dim = queries.shape
    # (q_h W_h^T): each head's queries taken back to the C image channels.
    queries = torch.einsum("bhqd,hdc->bhqc", queries, _heads_of(self.k_proj, heads, output_side=False))
    scores = queries.reshape(batch, heads * count, -1) @ k.transpose(-1, -2)  # B x heads*Nq x HW
    attn = (scores / math.sqrt(dim)).softmax(dim=-1)
    mixed = (attn @ v).view(batch, heads, count, -1)  # B x heads x Nq x C
    out = torch.einsum("bhqc,hdc->bhqd", mixed, _heads_of(self.v_proj, heads, output_side=False))
    out = out + self.v_proj.bias.view(heads, 1, dim)
    return self.out_proj(self._recombine_heads(out))


def _image_to_token_attention_forward(
    self: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """The decoder ``Attention.forward`` for the image tokens (``q``) attending to a few prompt tokens
    (``k``, ``v``), with the image side never projected.

    Per head, ``(q W_h + b_h) k_h^T = q (W_h^T k_h^T) + b_h . k_h``, and the output projection distributes
    over the heads: ``out_proj(concat_h attn_h v_h) = sum_h attn_h (v_h O_h^T) + o``. Upstream's
    ``HW x C -> HW x C/2`` query projection and ``HW x C/2 -> HW x C`` output projection become two
    products of the image with ``heads x tokens`` columns (vit_b: 44% of the work). The scores are held
    keys-major, so the softmax runs along the image tokens (vectorised) instead of along a handful of keys.
    The same function as upstream's, to float32 rounding; more tokens than that fall back to it."""
    if not _few_tokens(self, k.shape[1]):
        return type(self).forward(self, q, k, v)
    heads = self.num_heads
    keys = self._separate_heads(self.k_proj(k), heads)  # B x heads x Nk x d
    values = self._separate_heads(self.v_proj(v), heads)
    batch, _, count, dim = keys.shape
    # (W_h^T k_h^T) per head as rows over the C image channels, and each key's b_h . k_h.
    weights = torch.einsum("hdc,bhkd->bhkc", _heads_of(self.q_proj, heads, output_side=False), keys)
    bias = torch.einsum("hd,bhkd->bhk", self.q_proj.bias.view(heads, dim), keys)
    scores = weights.reshape(batch, heads * count, -1) @ q.transpose(-1, -2)  # B x heads*Nk x HW
    scores = (scores + bias.reshape(batch, -1, 1)) / math.sqrt(dim)
    attn = scores.view(batch, heads, count, -1).softmax(dim=-2).view(batch, heads * count, -1)
    # v_h O_h^T: each head's values taken to the C output channels.
    values = torch.einsum("bhkd,chd->bhkc", values, _heads_of(self.out_proj, heads, output_side=True))
    return torch.baddbmm(self.out_proj.bias, attn.transpose(-1, -2), values.reshape(batch, heads * count, -1))


def _channels_last_pe(decoder: MaskDecoder, image_pe: torch.Tensor) -> torch.Tensor:
    """``image_pe`` channels-last, converted once per PE tensor (the segmenter passes the same one every
    time; a racing thread converts the same values)."""
    cached = getattr(decoder, "_channels_last_pe", None)
    if cached is None or cached[0] is not image_pe:
        cached = (image_pe, image_pe.contiguous(memory_format=_CHANNELS_LAST))
        decoder._channels_last_pe = cached
    return cached[1]


def use_token_layout_mask_decoder(model: torch.nn.Module) -> bool:
    """Route ``model.mask_decoder.predict_masks`` through :func:`_predict_masks_in_token_layout` when the
    decoder is segment-anything's ``MaskDecoder`` architecture (SAM, MobileSAM); True when rerouted.

    The transformer's cross-attentions (both directions in every layer, and the final one) go through
    :func:`_token_to_image_attention_forward` and :func:`_image_to_token_attention_forward`, which never
    project the image tokens. Call it once the weights are loaded: the upscaling's per-pixel matrices are
    taken from them here. Only this instance changes. Decoders with another structure (SAM-HQ's, SAM 2's)
    keep their own."""
    decoder = getattr(model, "mask_decoder", None)
    upscaling = getattr(decoder, "output_upscaling", None)
    if type(decoder).__name__ != "MaskDecoder" or upscaling is None:
        return False
    pixelwise = _PixelwiseUpscaling.of(upscaling)
    if pixelwise is None:
        return False
    decoder._pixelwise_upscaling = pixelwise
    decoder.predict_masks = types.MethodType(_predict_masks_in_token_layout, decoder)
    transformer = decoder.transformer
    for layer in transformer.layers:
        _reroute(layer.cross_attn_token_to_image, _token_to_image_attention_forward)
        _reroute(layer.cross_attn_image_to_token, _image_to_token_attention_forward)
    _reroute(transformer.final_attn_token_to_image, _token_to_image_attention_forward)
    return True


def _reroute(attention: torch.nn.Module, forward: Any) -> None:
    attention.forward = types.MethodType(forward, attention)


def _unwrap_state_dict(obj: Any) -> Mapping[str, Any]:
    """Accept a raw state dict or the common ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers."""
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and _PATCH_KEY in inner:
                obj = inner
                break
        if any(isinstance(k, str) and k.startswith("module.") for k in obj):
            obj = {k.removeprefix("module."): v for k, v in obj.items()}
        return obj
    raise CheckpointError("not a SAM checkpoint: the file does not contain a state dict")


def read_state_dict(path: str | Path, *, mmap: bool = True) -> Mapping[str, Any]:
    """``torch.load`` a checkpoint safely (``weights_only=True``, CPU) with clear errors.

    ``mmap=True`` maps tensor storage instead of reading it (zip checkpoints; falls back to a plain load),
    which keeps peak memory at one copy of the weights and makes shape-only inspection nearly free.
    Raises :class:`CheckpointError` for a missing, empty, truncated, corrupt or foreign file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p.name} is empty")
    use_mmap = mmap and zipfile.is_zipfile(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"checkpoint {p.name} is not a plain tensor checkpoint (it needs arbitrary code to load)"
            ) from None
        raise CheckpointError(f"checkpoint {p.name} is corrupt or not a PyTorch checkpoint") from None
    except Exception as exc:
        # torch.load surfaces garbage input as almost any exception type (RuntimeError from the zip reader,
        # EOFError, IndexError from the unpickler on text files, ...): all mean "not a usable checkpoint".
        text = str(exc).lower()
        if "zip" in text or "central directory" in text or isinstance(exc, EOFError) or "eof" in text:
            raise CheckpointError(f"checkpoint {p.name} is truncated or corrupt") from None
        raise CheckpointError(f"checkpoint {p.name} is corrupt or not a PyTorch checkpoint") from None
    return _unwrap_state_dict(obj)


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}
_FINGERPRINT_LOCK = threading.Lock()


def checkpoint_fingerprint(path: str | Path) -> str:
    """sha256 of the checkpoint file's bytes (first 16 hex digits), memoised per (path, size, mtime).

    A content hash (rather than name/mtime) keeps the embedding cache shared between processes and machines
    that hold copies of the same weights, and separate for different weights with the same name.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _FINGERPRINT_LOCK:
        cached = _FINGERPRINTS.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            digest.update(chunk)
    value = digest.hexdigest()[:16]
    with _FINGERPRINT_LOCK:
        _FINGERPRINTS[key] = value
    return value


def peek_sam_config(path: str | Path) -> SamConfig | None:
    """The architecture of a checkpoint without loading its weights (memory-mapped, shapes only), or None.

    Cheap enough for a health check even on a 2.5 GB vit_h file.
    """
    try:
        return infer_sam_config(read_state_dict(path, mmap=True))
    except Exception:
        return None


def resolve_device(device: str | None) -> str:
    """``device`` or, when None/"auto", "cuda" if available else "cpu"."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


class SamSegmenter(SamLikeSegmenter):
    """The SAM backend (see the module docstring). Thread-safe; build one per process (see registry).

    Features are one plain float16 array (``1 x C x 64 x 64``); predictions carry the stability score of the
    decoder's logits, and :meth:`predict_chosen_many` upsamples only the chosen masks."""

    family = "sam"
    plain_features = True
    transform_class = ResizeLongestSide

    def _identify(self, path: Path) -> tuple[Mapping[str, Any], FamilyInfo]:
        state_dict = read_state_dict(path, mmap=True)
        # Detection hook: a SAM-HQ / MobileSAM / SAM 2 checkpoint gets a message naming its family (load it
        # with imaging.families.load_segmenter) instead of a confusing shape mismatch.
        refuse_other_family(state_dict, expected="sam", name=path.name)
        config = infer_sam_config(state_dict)
        return state_dict, FamilyInfo("sam", config.model_type, f"SAM {config.model_type}", config)

    def _build(self, info: FamilyInfo) -> torch.nn.Module:
        model = build_sam_model(info.config)
        # Upstream's attention (to float32 rounding), without its heads x 4096 x 4096 score matrices.
        use_chunked_global_attention(model)
        return model

    def _encode_tensors(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self.model.image_encoder(batch)}

    def _decode(
        self, features: dict[str, torch.Tensor], sparse: torch.Tensor, dense: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        low_res, iou = self.model.mask_decoder(
            **mask_decoder_inputs(features["features"], self._dense_pe(), sparse, dense, multimask)
        )
        return low_res, iou, True

    def _predict(self, embedding: Embedding, prompt: Prompt, multimask: bool) -> list[MaskCandidate]:
        """Masks as ``SamPredictor.predict`` computes them, best predicted IoU first."""
        with torch.inference_mode():
            low_res, iou, _ = self._decode_prompt(embedding, prompt, multimask)
            masks = self._upsample(low_res[0], embedding)
            scores = iou[0].float().cpu().numpy()
            stability = _stability(low_res[0], self.model.mask_threshold)
        return sorted_candidates(masks, scores, indexed=multimask, stability=stability)

    def predict_chosen_many(
        self,
        embedding: Embedding,
        prompts: Sequence[Prompt],
        *,
        multimask: bool = True,
    ) -> list[MaskCandidate]:
        """The chosen candidate of each :class:`~imaging.segmenter.Prompt`: for every prompt, exactly the mask
        and score of ``choose_candidate(predict(embedding, coords, labels, box, multimask=...), choice)``.

        Cheaper than calling :meth:`predict` per prompt: identical prompts are decoded once, and only the
        chosen low-resolution mask of each prompt is upsampled to full size instead of all three candidates,
        which is most of ``predict``'s time at photo sizes. The decoder runs once per distinct prompt, not as
        one batch: batching changes the float rounding of its small token-side matrix products (a few pixels
        and ~1e-7 of score), which would make a template's mask depend on which other templates share its
        batch; measured, the batch saved ~13% of predict.
        """
        checked = [
            validated_prompt(embedding, self.fingerprint, p.coords, p.labels, p.box, p.mask_choice)
            for p in prompts
        ]
        unique: dict[bytes, int] = {}
        slots = [
            unique.setdefault(
                b"|".join(
                    [
                        p.coords.tobytes(),
                        p.labels.tobytes(),
                        b"" if p.box is None else p.box.tobytes(),
                        str(p.mask_choice).encode(),
                    ]
                ),
                len(unique),
            )
            for p in checked
        ]
        if not slots:
            return []
        firsts = {u: i for i, u in reversed(list(enumerate(slots)))}
        chosen_logits: list[torch.Tensor] = []
        chosen: list[tuple[float, float, int | None]] = []
        with torch.inference_mode():
            features = self._device_features(embedding)
            for u in range(len(unique)):
                prompt = checked[firsts[u]]
                choice = prompt.mask_choice
                low_res, iou, _ = self._decode_prompt(embedding, prompt, multimask, features)
                scores = iou[0].float().cpu().numpy()
                pick = int(np.argmax(scores))  # first maximum, like predict's (-score, index) order
                if multimask and choice != "best" and 0 <= choice < len(scores):
                    pick = int(choice)
                chosen_logits.append(low_res[0, pick])
                stability = _stability(low_res[0, pick : pick + 1], self.model.mask_threshold)[0]
                chosen.append((float(scores[pick]), stability, pick if multimask else None))
            masks = self._upsample(torch.stack(chosen_logits), embedding)
        return [
            MaskCandidate(
                mask=np.ascontiguousarray(masks[u]),
                score=chosen[u][0],
                stability=chosen[u][1],
                index=chosen[u][2],
            )
            for u in slots
        ]

    def _upsample(self, low_res: torch.Tensor, embedding: Embedding) -> np.ndarray:
        """``K x 256 x 256`` logits to ``K x H x W`` bool masks at the original size (``postprocess_masks`` +
        threshold). Bilinear interpolation treats every channel on its own, so upsampling a subset, or one
        mask per call, changes no value; one call per mask is ~3x faster than one call on three channels
        (measured at 2048x1536: torch's multi-channel bilinear path is much slower per channel)."""
        height, width = embedding.original_size
        input_height, input_width = embedding.input_size
        side = self.model.image_encoder.img_size
        out = np.empty((low_res.shape[0], height, width), dtype=bool)
        for k in range(low_res.shape[0]):
            # Sam.postprocess_masks step by step, with the crop made contiguous: the second interpolation then
            # takes torch's vectorised path (the same values; half the time at 2048x1536).
            mask = F.interpolate(low_res[None, k : k + 1], (side, side), mode="bilinear", align_corners=False)
            mask = mask[..., :input_height, :input_width].contiguous()
            mask = F.interpolate(mask, (height, width), mode="bilinear", align_corners=False)
            if mask.device.type == "cpu":
                torch.gt(mask[0, 0], self.model.mask_threshold, out=torch.from_numpy(out[k]))  # no copy
            else:
                out[k] = (mask > self.model.mask_threshold)[0, 0].cpu().numpy()
        return out


def _stability(low_res: torch.Tensor, threshold: float, offset: float = 1.0) -> list[float]:
    """Per candidate (``C x h x w`` logits), ``imaging.annotations.stability_score`` on the decoder's 256 x 256
    logits: the full-size upsampling is not needed for a ratio of areas and would cost far more."""
    high = (low_res > threshold + offset).flatten(1).sum(dim=1)
    low = (low_res > threshold - offset).flatten(1).sum(dim=1)
    return [float(h) / float(u) if int(u) else 0.0 for h, u in zip(high.tolist(), low.tolist(), strict=True)]


def save_state_dict(state_dict: Mapping[str, Any], path: str | Path) -> Path:
    """Write a state dict atomically (temp file + rename), as ``torch.save`` would."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        torch.save(dict(state_dict), tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p
