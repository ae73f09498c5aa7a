"""Deterministic random-weight checkpoints of every model family, for tests and benchmarks (no downloads).

Each is built by the family's own package builder at its smallest published size (SAM-HQ ``vit_tiny`` via
``segment_anything_hq.build_sam.build_sam_vit_t``, MobileSAM via ``mobile_sam.build_sam.build_sam_vit_t``,
SAM 2.1 ``hiera_tiny`` via ``sam2.build_sam.build_sam2``), or, where the package's model classes allow a
smaller one that our loader still recognises from its tensors, shrunk (:data:`TINY_HQ_VIT`: SAM-HQ's decoder
on :data:`imaging.tiny_sam.TINY_CONFIG`'s 2-block ViT). Weights are PyTorch's default initialisers under a
fixed seed, like :mod:`imaging.tiny_sam`: the masks mean nothing, but are deterministic and non-trivial.
SAM 2 checkpoints are written in its published form (``{"model": state_dict}``).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

from imaging.families import TinyVitConfig
from imaging.sam import save_state_dict
from imaging.tiny_sam import TINY_CONFIG

#: SAM-HQ on the tiny 2-block ViT of imaging.tiny_sam (block 1 global, so ``interm`` is its output).
TINY_HQ_VIT = TINY_CONFIG
#: A shrunk TinyViT (one block per stage, narrow), built with the packages' own TinyViT class: our loader
#: reads every one of these sizes back from the tensors, so MobileSAM / SAM-HQ tests run in seconds. The
#: last width stays 320: TinyViT's PatchMerging keys its stride-1 (64x64 output) case on that value.
TINY_TINYVIT = TinyVitConfig(
    embed_dims=(16, 32, 48, 320), depths=(1, 1, 1, 1), num_heads=(2, 1, 2, 5), window_sizes=(7, 7, 14, 7)
)

FAMILY_BUILDS = (
    "sam_hq_vit_tiny",
    "sam_hq_tiny_vit",
    "sam_hq_tiny_tinyvit",
    "mobile_sam",
    "mobile_sam_tiny",
    "sam2_hiera_tiny",
)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def random_state_dict(kind: str, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of a random-weight model of ``kind`` (one of :data:`FAMILY_BUILDS`)."""
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()):
        # fork_rng keeps the caller's RNG untouched; SAM-HQ's builders print load info, hence the redirect.
        torch.manual_seed(seed)
        if kind == "sam_hq_vit_tiny":
            from segment_anything_hq.build_sam import build_sam_vit_t

            return _state(build_sam_vit_t())
        if kind == "sam_hq_tiny_vit":
            from imaging.sam_hq import build_sam_hq_model

            return _state(build_sam_hq_model(TINY_HQ_VIT))
        if kind == "sam_hq_tiny_tinyvit":
            from imaging.sam_hq import build_sam_hq_model

            return _state(build_sam_hq_model(TINY_TINYVIT))
        if kind == "mobile_sam_tiny":
            from imaging.mobile_sam import build_mobile_sam_model

            return _state(build_mobile_sam_model(TINY_TINYVIT))
        if kind == "mobile_sam":
            from mobile_sam.build_sam import build_sam_vit_t

            return _state(build_sam_vit_t())
        if kind == "sam2_hiera_tiny":
            import sam2  # noqa: F401 - initialises hydra's config module
            from sam2.build_sam import build_sam2

            return _state(build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu"))
    raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(FAMILY_BUILDS)}")


def build_family_checkpoint(kind: str, path: Path, *, seed: int = 0) -> Path:
    """Write a random-weight checkpoint of ``kind`` to ``path`` and return it."""
    state = random_state_dict(kind, seed=seed)
    if kind.startswith("sam2"):
        return save_state_dict({"model": state}, path)
    return save_state_dict(state, path)
