"""Which model family a checkpoint holds, read from its tensors alone (never its file name), and the loader.

Families (``FamilyInfo.family``) and how they are told apart (first match wins):

- ``"sam2"`` — SAM 2 / 2.1 (``sam2``): ``image_encoder.trunk.*`` (Hiera) and ``sam_mask_decoder.*`` tensors.
  2.1 has ``no_obj_embed_spatial``, 2.0 does not. The size is read off the trunk: the embed dim
  (``trunk.patch_embed.proj.weight``) and the stage lengths (a block with a ``proj`` starts a new stage);
  only the four published sizes load (hiera_tiny / small / base_plus / large), because Hiera's head count
  and global-attention blocks leave no trace in the tensor shapes.
- ``"sam_hq"`` — SAM-HQ (``segment-anything-hq``): a SAM checkpoint plus ``mask_decoder.hf_token`` /
  ``mask_decoder.compress_vit_feat`` tensors; the encoder is a ViT (vit_b/l/h/custom, as SAM) or TinyViT
  (``vit_tiny``).
- ``"mobile_sam"`` — MobileSAM (``mobilesam-mirror``): a TinyViT encoder (``image_encoder.layers.*``,
  ``image_encoder.patch_embed.seq.*``) with SAM's prompt encoder and mask decoder.
- ``"sam"`` — SAM 1 (``segment-anything``): :func:`imaging.sam.infer_sam_config`.

Anything else is refused with a :class:`CheckpointError` naming the top-level key prefixes and a couple of
tensor shapes found. :func:`load_segmenter` builds the matching segmenter; :func:`peek_checkpoint` describes a
file without building anything (memory-mapped, shapes only).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imaging.errors import CheckpointError

FAMILIES = ("sam", "sam_hq", "mobile_sam", "sam2")
FAMILY_NAMES = {"sam": "SAM", "sam_hq": "SAM-HQ", "mobile_sam": "MobileSAM", "sam2": "SAM 2"}

_HQ_KEYS = ("mask_decoder.hf_token.weight", "mask_decoder.compress_vit_feat.0.weight")
_TINYVIT_KEY = "image_encoder.patch_embed.seq.0.c.weight"
_SAM2_TRUNK_PATCH = "image_encoder.trunk.patch_embed.proj.weight"
_SAM2_DECODER_KEY = "sam_mask_decoder.iou_token.weight"
_SAM2_BLOCK_RE = re.compile(r"^image_encoder\.trunk\.blocks\.(\d+)\.")
_TINYVIT_BLOCK_RE = re.compile(r"^image_encoder\.layers\.(\d+)\.blocks\.(\d+)\.")

# (embed dim, stage lengths) -> (size, config file stem) of the published SAM 2 / 2.1 Hiera trunks.
SAM2_SIZES: dict[tuple[int, tuple[int, ...]], tuple[str, str]] = {
    (96, (1, 2, 7, 2)): ("hiera_tiny", "hiera_t"),
    (96, (1, 2, 11, 2)): ("hiera_small", "hiera_s"),
    (112, (2, 3, 16, 3)): ("hiera_base_plus", "hiera_b+"),
    (144, (2, 6, 36, 4)): ("hiera_large", "hiera_l"),
}


@dataclass(frozen=True)
class TinyVitConfig:
    """A TinyViT image encoder (MobileSAM, SAM-HQ vit_tiny), as inferred by :func:`infer_tinyvit_config`."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_sizes: tuple[int, ...]
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3

    @property
    def is_published(self) -> bool:
        return self == TINYVIT_PUBLISHED


#: The one published TinyViT-5M configuration of MobileSAM and SAM-HQ's vit_tiny.
TINYVIT_PUBLISHED = TinyVitConfig(
    embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2), num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7)
)


@dataclass(frozen=True)
class Sam2Config:
    """A SAM 2 / 2.1 checkpoint: ``version`` "2.1" or "2", ``size`` (hiera_tiny ...) and the ``sam2``
    package's own config file that builds it."""

    version: str
    size: str
    config_file: str


@dataclass(frozen=True)
class FamilyInfo:
    """What a checkpoint holds: ``family`` (one of :data:`FAMILIES`), ``size`` ("vit_b", "vit_tiny",
    "hiera_tiny", "custom", ...), ``label`` for people ("SAM-HQ vit_b", "MobileSAM", "SAM 2.1 hiera_tiny")
    and the family's architecture ``config`` (SamConfig, TinyVitConfig, Sam2Config, or for SAM-HQ the
    encoder's SamConfig / TinyVitConfig)."""

    family: str
    size: str
    label: str
    config: Any


#: The version of each family's encode/predict method: part of the fingerprint, so a change in how features
#: are produced or stored invalidates cached embeddings.
METHOD_VERSIONS = {
    "sam": "sam-v1-fp16",
    "sam_hq": "samhq-v1-fp16",
    "mobile_sam": "mobilesam-v1-fp16",
    "sam2": "sam2-v1-fp16",
}


def segmenter_fingerprint(info: FamilyInfo, checkpoint_digest: str) -> str:
    """The fingerprint of the segmenter for a checkpoint (what keys the embedding cache): the family's
    method version, the family and size, and the checkpoint's content digest. SAM 1's names its size only
    (``sam-v1-fp16:vit_b:<digest>``), SAM 2's its version (``sam2-v1-fp16:sam2.1:hiera_tiny:<digest>``), the
    others their family (``samhq-v1-fp16:sam_hq:vit_b:<digest>``)."""
    if info.family == "sam":
        tag = info.size
    elif info.family == "sam2":
        tag = f"sam{info.config.version}:{info.size}"
    else:
        tag = f"{info.family}:{info.size}"
    return f"{METHOD_VERSIONS[info.family]}:{tag}:{checkpoint_digest}"


def unwrap_state_dict(obj: Any) -> Mapping[str, Any]:
    """The tensor mapping of a checkpoint: a raw state dict, or one under ``"model"`` (SAM 2's format) or
    ``"state_dict"``, with any ``module.`` prefix (DataParallel) removed."""
    if not isinstance(obj, Mapping):
        raise CheckpointError("not a model checkpoint: the file does not contain a state dict")
    for wrapper in ("model", "state_dict"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping) and not any(hasattr(v, "shape") for v in obj.values()):
            obj = inner
            break
    if any(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """The checkpoint's state dict, memory-mapped (see :func:`imaging.sam.read_state_dict` for the errors)."""
    from imaging.sam import read_state_dict

    return unwrap_state_dict(read_state_dict(path, mmap=True))


def describe_tensors(state_dict: Mapping[str, Any], *, limit: int = 6) -> str:
    """A short account of what a state dict holds, for error messages: key prefixes and a few shapes."""
    keys = [k for k in state_dict if isinstance(k, str)]
    if not keys:
        return "no named tensors"
    prefixes: dict[str, int] = {}
    for key in keys:
        head = ".".join(key.split(".")[:2]) if key.count(".") >= 2 else key.split(".")[0]
        prefixes[head] = prefixes.get(head, 0) + 1
    shown = ", ".join(f"{p} ({n})" for p, n in sorted(prefixes.items())[:limit])
    more = f" and {len(prefixes) - limit} more" if len(prefixes) > limit else ""
    shapes = []
    for key in keys[:2]:
        shape = getattr(state_dict[key], "shape", None)
        shapes.append(f"{key} {list(shape) if shape is not None else '?'}")
    return f"{len(keys)} tensors under {shown}{more}; e.g. {'; '.join(shapes)}"


def _shape(state_dict: Mapping[str, Any], key: str) -> tuple[int, ...]:
    return tuple(int(d) for d in state_dict[key].shape)


def infer_tinyvit_config(state_dict: Mapping[str, Any]) -> TinyVitConfig:
    """The TinyViT encoder of a MobileSAM / SAM-HQ vit_tiny checkpoint, from tensor shapes only.

    Layer 0 is the MBConv stage (dim from the patch embedding's last conv, expand ratio from ``conv1``);
    layers 1-3 are attention stages: dim from ``attn.qkv`` inputs, heads from ``attn.attention_biases`` rows,
    window from its columns (``window**2`` offsets), MLP ratio from ``mlp.fc1``, local conv from its kernel.
    """
    try:
        depth_sets: dict[int, set[int]] = {}
        for key in state_dict:
            if m := _TINYVIT_BLOCK_RE.match(key):
                depth_sets.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        layers = sorted(depth_sets)
        if layers != [0, 1, 2, 3]:
            raise CheckpointError(f"unsupported TinyViT encoder: layers {layers}, expected 0-3")
        depths = tuple(len(depth_sets[i]) for i in layers)
        dims = [_shape(state_dict, "image_encoder.patch_embed.seq.2.c.weight")[0]]
        # Layer 0 is convolutional: its heads and window are unused; these are the builder's values.
        heads, windows = [2], [7]
        mlp_ratio = 4.0
        local_conv = 3
        for i in (1, 2, 3):
            prefix = f"image_encoder.layers.{i}.blocks.0."
            dims.append(_shape(state_dict, prefix + "attn.qkv.weight")[1])
            n_heads, offsets = _shape(state_dict, prefix + "attn.attention_biases")
            heads.append(n_heads)
            windows.append(round(offsets**0.5))
            mlp_ratio = _shape(state_dict, prefix + "mlp.fc1.weight")[0] / dims[-1]
            local_conv = _shape(state_dict, prefix + "local_conv.c.weight")[-1]
        expand = _shape(state_dict, "image_encoder.layers.0.blocks.0.conv1.c.weight")[0] / dims[0]
    except KeyError as exc:
        raise CheckpointError(f"unsupported TinyViT encoder: tensor {exc.args[0]!r} is missing") from None
    return TinyVitConfig(
        embed_dims=tuple(dims),
        depths=depths,
        num_heads=tuple(heads),
        window_sizes=tuple(windows),
        mlp_ratio=mlp_ratio,
        mbconv_expand_ratio=expand,
        local_conv_size=local_conv,
    )


def infer_sam2_config(state_dict: Mapping[str, Any]) -> Sam2Config:
    """The SAM 2 / 2.1 size from the Hiera trunk's tensors (see the module docstring)."""
    embed_dim = _shape(state_dict, _SAM2_TRUNK_PATCH)[0]
    blocks = sorted({int(m.group(1)) for key in state_dict if (m := _SAM2_BLOCK_RE.match(key))})
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointError(
            "not a SAM 2 checkpoint: the Hiera trunk's blocks are missing or not contiguous"
        )
    # A block that changes the width carries a projection: it is the first block of a new stage.
    starts = [0] + [i for i in blocks if f"image_encoder.trunk.blocks.{i}.proj.weight" in state_dict]
    stages = tuple(b - a for a, b in zip(starts, [*starts[1:], len(blocks)], strict=True))
    known = SAM2_SIZES.get((embed_dim, stages))
    if known is None:
        raise CheckpointError(
            f"unsupported SAM 2 checkpoint: Hiera trunk with embed dim {embed_dim} and stages {list(stages)} "
            "is none of the published sizes (tiny, small, base+, large)"
        )
    size, stem = known
    if "no_obj_embed_spatial" in state_dict:
        return Sam2Config(version="2.1", size=size, config_file=f"configs/sam2.1/sam2.1_{stem}.yaml")
    return Sam2Config(version="2", size=size, config_file=f"configs/sam2/sam2_{stem}.yaml")


def detect_family(state_dict: Mapping[str, Any]) -> FamilyInfo:
    """The family, size and architecture of a state dict, from tensor names and shapes only.

    Raises :class:`CheckpointError` naming what was found when it matches no family.
    """
    from imaging.sam import infer_sam_config

    if _SAM2_TRUNK_PATCH in state_dict and _SAM2_DECODER_KEY in state_dict:
        config = infer_sam2_config(state_dict)
        return FamilyInfo("sam2", config.size, f"SAM {config.version} {config.size}", config)
    is_hq = all(k in state_dict for k in _HQ_KEYS)
    if _TINYVIT_KEY in state_dict and "mask_decoder.iou_token.weight" in state_dict:
        config = infer_tinyvit_config(state_dict)
        if is_hq:
            size = "vit_tiny" if config.is_published else "custom"
            return FamilyInfo("sam_hq", size, f"SAM-HQ {size}", config)
        size = "vit_t" if config.is_published else "custom"
        return FamilyInfo(
            "mobile_sam", size, "MobileSAM" if config.is_published else "MobileSAM custom", config
        )
    try:
        config = infer_sam_config(state_dict)
    except CheckpointError as exc:
        raise CheckpointError(
            f"not a checkpoint of a known model family (SAM, SAM-HQ, MobileSAM, SAM 2): "
            f"{describe_tensors(state_dict)}"
        ) from exc
    if is_hq:
        return FamilyInfo("sam_hq", config.model_type, f"SAM-HQ {config.model_type}", config)
    return FamilyInfo("sam", config.model_type, f"SAM {config.model_type}", config)


def refuse_other_family(state_dict: Mapping[str, Any], *, expected: str, name: str) -> None:
    """Raise :class:`CheckpointError` when ``state_dict`` clearly holds another family than ``expected``
    (an unknown checkpoint is left to the family's own, more specific, checks)."""
    try:
        info = detect_family(unwrap_state_dict(state_dict))
    except CheckpointError:
        return
    refuse_family_mismatch(info, expected=expected, name=name)


def refuse_family_mismatch(info: FamilyInfo, *, expected: str, name: str) -> None:
    """Raise :class:`CheckpointError` naming both families when checkpoint ``name`` (detected as ``info``)
    is not of family ``expected``: the one message of every family's loader."""
    if info.family != expected:
        raise CheckpointError(
            f"checkpoint {name} is a {info.label} checkpoint, not {FAMILY_NAMES[expected]} "
            "(load it with imaging.families.load_segmenter)"
        )


def peek_checkpoint(path: str | Path) -> FamilyInfo:
    """The family of a checkpoint file without building a model (memory-mapped; no weights are read).

    Raises :class:`CheckpointError` for an unreadable or unknown file.
    """
    return detect_family(read_checkpoint(path))


def load_segmenter(path: str | Path, *, device: str | None = None) -> Any:
    """Build the segmenter for a checkpoint of any family (detected from its tensors).

    Returns a :class:`~imaging.segmenter.Segmenter`: ``SamSegmenter``, ``SamHqSegmenter``,
    ``MobileSamSegmenter`` or ``Sam2Segmenter``. Raises :class:`CheckpointError` for an unreadable, unknown or
    inconsistent checkpoint. Each family's package is imported only when its checkpoint is loaded.
    """
    info = peek_checkpoint(path)
    if info.family == "sam":
        from imaging.sam import SamSegmenter

        return SamSegmenter(path, device=device)
    if info.family == "sam_hq":
        from imaging.sam_hq import SamHqSegmenter

        return SamHqSegmenter(path, device=device)
    if info.family == "mobile_sam":
        from imaging.mobile_sam import MobileSamSegmenter

        return MobileSamSegmenter(path, device=device)
    from imaging.sam2 import Sam2Segmenter

    return Sam2Segmenter(path, device=device)
