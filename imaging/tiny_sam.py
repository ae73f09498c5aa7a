"""Deterministic random-weight SAM checkpoints for tests and benchmarks (no downloads).

:func:`build_tiny_sam_checkpoint` writes a real SAM architecture (segment-anything's modules, image size 1024,
prompt embedding 256, full mask decoder) with a deliberately small ViT image encoder, so the real loader,
architecture inference, encode and predict paths all run in well under a second per image on a CPU.
:func:`build_vit_b_random_checkpoint` writes the full vit_b shape (~375 MB) for slow tests and benchmarks.
Weights are random (PyTorch's default initialisers, plus small random relative-position tables and position
embedding where segment-anything starts from zeros): the masks mean nothing, but they are deterministic for a
given seed and, as checked, neither empty nor full for typical prompts (the mask decoder's default init
already gives spatially varying logits), so previews show something.
"""

from __future__ import annotations

from pathlib import Path

import torch

from imaging.sam import KNOWN_MODELS, SamConfig, build_sam_model, save_state_dict

#: The tiny encoder: 64-dim tokens, 2 blocks with 2 heads each, block 1 global, window 14.
TINY_CONFIG = SamConfig(
    encoder_embed_dim=64,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    window_size=14,
    model_type="custom",
)


def _vit_b_config() -> SamConfig:
    dim, depth, heads, globals_ = KNOWN_MODELS["vit_b"]
    return SamConfig(
        encoder_embed_dim=dim,
        encoder_depth=depth,
        encoder_num_heads=heads,
        encoder_global_attn_indexes=globals_,
        window_size=14,
        model_type="vit_b",
    )


def _random_state_dict(config: SamConfig, seed: int) -> dict[str, torch.Tensor]:
    # fork_rng keeps the caller's global torch RNG untouched; module initialisers draw from it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam_model(config)
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            # segment-anything zero-initialises these; random values exercise the inference of the table
            # sizes and the rel-pos arithmetic like trained weights do.
            for name, param in model.named_parameters():
                if name.endswith(("rel_pos_h", "rel_pos_w")) or name == "image_encoder.pos_embed":
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def build_tiny_sam_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """Write a tiny SAM checkpoint (state dict, ~20 MB) to ``path`` and return it."""
    return save_state_dict(_random_state_dict(TINY_CONFIG, seed), path)


def build_vit_b_random_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """Write a vit_b-shaped SAM checkpoint with random weights (~375 MB) to ``path`` and return it."""
    return save_state_dict(_random_state_dict(_vit_b_config(), seed), path)
