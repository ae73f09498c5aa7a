"""The shared body of the checkpoint families (SAM, SAM-HQ, MobileSAM, SAM 2): one home for loading,
encoding and the decoder call.

:class:`CheckpointSegmenter` is what every family does: read the checkpoint, say which family and size it holds
(:meth:`~CheckpointSegmenter._identify`), build the model from the family's package (:meth:`_build`), load it
strictly, fingerprint it, and encode images without per-image state on the object: the :class:`Embedding`
carries the features (float16) and both sizes, so any number of threads can predict concurrently. A family
says how images become the encoder's input batch (:meth:`_preprocess`) and what the encoder returns
(:meth:`_encode_tensors`).

:class:`SamLikeSegmenter` adds what the packages that follow segment-anything's API share (SAM, MobileSAM,
SAM-HQ ship their own copies of ``Sam``, ``PromptEncoder``, ``ResizeLongestSide``...): the
``ResizeLongestSide`` + ``preprocess`` input, the prompt transform and prompt encoder of
``SamPredictor.predict``, and a decoder hook (:meth:`_decode`); :func:`build_sam_like_model` assembles their
models exactly like their ``build_sam``. SAM 2 (:mod:`imaging.sam2`) has its own transforms and decoder.

``encode_batch`` runs the encoder on several images at once on CUDA, under fp16 autocast (bf16 where the GPU
supports it), and simply loops on CPU, where batching gains nothing and autocast would only slow it down.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imaging.allocator import tune_allocator_for_tensors
from imaging.errors import CheckpointError
from imaging.families import (
    FamilyInfo,
    detect_family,
    read_checkpoint,
    refuse_family_mismatch,
    segmenter_fingerprint,
)
from imaging.segmenter import Embedding, MaskCandidate, Prompt, SegmenterBase, check_rgb

#: Where segment-anything and its forks normalise pixels (ImageNet statistics in 0-255 units).
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]


def autocast_dtype(device: str) -> torch.dtype | None:
    """The autocast dtype for batched CUDA encodes (bf16 when supported, else fp16); None on CPU."""
    if not str(device).startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_strict(model: torch.nn.Module, state_dict: Mapping[str, Any], *, name: str, label: str) -> None:
    """``load_state_dict(strict=True)`` with a short :class:`CheckpointError` on any mismatch."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
        raise CheckpointError(
            f"checkpoint {name} does not match the inferred {label} architecture: {first}"
        ) from None


def sorted_candidates(
    masks: np.ndarray, scores: np.ndarray, *, indexed: bool, stability: Sequence[float] | None = None
) -> list[MaskCandidate]:
    """Candidates best score first (ties: model order); ``index`` is the model's output position when
    ``indexed`` (three multimask outputs), else None; ``stability`` per model output, when computed."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return [
        MaskCandidate(
            mask=np.ascontiguousarray(masks[i]),
            score=float(scores[i]),
            stability=None if stability is None else stability[i],
            index=i if indexed else None,
        )
        for i in order
    ]


def mask_decoder_inputs(
    image_embed: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    multimask: bool,
) -> dict[str, Any]:
    """The keyword arguments every family's mask decoder takes (SAM 2 and SAM-HQ add their own)."""
    return {
        "image_embeddings": image_embed,
        "image_pe": image_pe,
        "sparse_prompt_embeddings": sparse,
        "dense_prompt_embeddings": dense,
        "multimask_output": multimask,
    }


def build_vit_encoder(config: Any, encoder_class: Any) -> torch.nn.Module:
    """The ViT image encoder of ``build_sam._build_sam`` with ``config``'s sizes (an
    :class:`imaging.sam.SamConfig`); ``encoder_class`` is the package's ``ImageEncoderViT`` (segment-anything's
    and SAM-HQ's take the same arguments)."""
    return encoder_class(
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


def build_sam_like_model(
    modeling: Any,
    image_encoder: torch.nn.Module,
    *,
    decoder_class: Any = None,
    image_size: int = 1024,
    patch_size: int = 16,
    prompt_embed_dim: int = 256,
    decoder_depth: int = 2,
    decoder_mlp_dim: int = 2048,
    **decoder_kwargs: Any,
) -> torch.nn.Module:
    """An untrained, eval-mode ``modeling.Sam`` around ``image_encoder``, with the prompt encoder and mask
    decoder of ``build_sam._build_sam``. ``modeling`` is the package's ``modeling`` module (segment-anything,
    MobileSAM, SAM-HQ); ``decoder_class`` defaults to its ``MaskDecoder``, ``decoder_kwargs`` go to it
    (SAM-HQ's ``vit_dim``). The modules are created in the builders' order (encoder, prompt encoder,
    transformer, decoder), so a seeded build draws the same random weights as theirs."""
    image_embedding_size = image_size // patch_size
    model = modeling.Sam(
        image_encoder=image_encoder,
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(image_embedding_size, image_embedding_size),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=(decoder_class or modeling.MaskDecoder)(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=decoder_depth, embedding_dim=prompt_embed_dim, mlp_dim=decoder_mlp_dim, num_heads=8
            ),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            **decoder_kwargs,
        ),
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
    )
    model.eval()
    return model


class CheckpointSegmenter(SegmenterBase):
    """Base of the checkpoint families (see the module docstring). Thread-safe."""

    backend = "sam"
    cacheable = True
    family = ""  # set by subclasses
    #: The family's model builder, called with the checkpoint's architecture config (set by subclasses).
    build_model: Any = None
    #: Embedding features as one plain array (SAM 1's cache format) instead of named arrays.
    plain_features = False
    #: Whether the decoder runs in :func:`imaging.sam.use_token_layout_mask_decoder`'s layout (set on load).
    token_layout_decoder = False

    def __init__(self, checkpoint_path: str | Path, *, device: str | None = None) -> None:
        from imaging.sam import checkpoint_fingerprint, resolve_device, use_token_layout_mask_decoder

        super().__init__()
        # A process that loads a model runs tensor code from now on: keep its temporaries off fresh mmaps.
        tune_allocator_for_tensors()
        self.checkpoint_path = Path(checkpoint_path)
        state_dict, info = self._identify(self.checkpoint_path)
        self.info = info
        self.config = info.config
        self.model_type: str | None = info.size
        self.label = info.label
        self.device = resolve_device(device)
        model = self._build(info)
        load_strict(model, state_dict, name=self.checkpoint_path.name, label=info.label)
        del state_dict
        self.model = model.to(self.device).eval()
        # The same masks and scores as upstream's decoder to float32 rounding, without its strided reads and
        # layout copies (SAM and MobileSAM; measured on the CPU only, so other devices keep upstream's layout).
        self.token_layout_decoder = self.device == "cpu" and use_token_layout_mask_decoder(self.model)
        self._prepare_transforms()
        self.fingerprint = segmenter_fingerprint(info, checkpoint_fingerprint(self.checkpoint_path))
        # One encoder forward at a time: concurrent forwards only oversubscribe the CPU threads (each
        # already uses all cores) and multiply peak memory; prediction is light and runs concurrently.
        self._encode_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.checkpoint_path.name!r}, model={self.label}, device={self.device})"
        )

    # -- family hooks ------------------------------------------------------------------------------------

    def _identify(self, path: Path) -> tuple[Mapping[str, Any], FamilyInfo]:
        """The checkpoint's state dict and what it holds; refuses another family's checkpoint."""
        state_dict = read_checkpoint(path)
        info = detect_family(state_dict)
        refuse_family_mismatch(info, expected=self.family, name=path.name)
        return state_dict, info

    def _build(self, info: FamilyInfo) -> torch.nn.Module:
        """The untrained, eval-mode model for ``info``: by default ``build_model(info.config)``."""
        return self.build_model(info.config)

    def _prepare_transforms(self) -> None:
        """Set up the image and prompt transforms, once the model is on its device."""
        raise NotImplementedError

    def _preprocess(
        self, images: Sequence[np.ndarray]
    ) -> tuple[torch.Tensor, list[tuple[tuple[int, int], tuple[int, int]]]]:
        """The encoder's ``B x 3 x S x S`` input for checked images, and each one's (original, input) size."""
        raise NotImplementedError

    def _encode_tensors(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoder outputs for a preprocessed batch, as named ``B x ...`` tensors."""
        raise NotImplementedError

    # -- encode ------------------------------------------------------------------------------------------

    def encode(self, rgb: np.ndarray) -> Embedding:
        """Run the image encoder (fp32); features are returned as float16 (see the module docstring)."""
        return self._encode_chunk([rgb], autocast=None)[0]

    def encode_batch(self, images: Sequence[np.ndarray], *, batch_size: int = 4) -> list[Embedding]:
        """Encode several images: batches of ``batch_size`` under autocast on CUDA; a loop of
        :meth:`encode` on CPU (same results as calling it per image)."""
        dtype = autocast_dtype(self.device)
        if dtype is None:
            return [self.encode(rgb) for rgb in images]
        step = max(1, int(batch_size))
        out: list[Embedding] = []
        for start in range(0, len(images), step):
            out.extend(self._encode_chunk(images[start : start + step], autocast=dtype))
        return out

    def _encode_chunk(self, images: Sequence[np.ndarray], *, autocast: torch.dtype | None) -> list[Embedding]:
        for rgb in images:
            check_rgb(rgb)
        batch, sizes = self._preprocess(images)
        amp = torch.autocast("cuda", dtype=autocast) if autocast is not None else contextlib.nullcontext()
        with self._encode_lock, torch.inference_mode(), amp:
            outputs = self._encode_tensors(batch)
            embeddings = [
                self._embedding(outputs, i, original, input_size)
                for i, (original, input_size) in enumerate(sizes)
            ]
        self._count_encodes(len(embeddings))
        return embeddings

    def _embedding(
        self,
        outputs: dict[str, torch.Tensor],
        row: int,
        original: tuple[int, int],
        input_size: tuple[int, int],
    ) -> Embedding:
        arrays = {k: v[row : row + 1].to(torch.float16).cpu().numpy() for k, v in outputs.items()}
        return Embedding(
            features=arrays["features"] if self.plain_features else arrays,
            original_size=original,
            input_size=input_size,
            fingerprint=self.fingerprint,
        )

    # -- predict -----------------------------------------------------------------------------------------

    def _device_features(self, embedding: Embedding) -> dict[str, torch.Tensor]:
        """The embedding's arrays as float32 tensors on the model's device (the decoder's input); image maps
        channels-last for the token-layout decoder, which reads them so (converted here once per image, in
        the same pass as the float16 -> float32 step, instead of once per prompt)."""
        features = {}
        for key, array in embedding.arrays().items():
            tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
            if self.token_layout_decoder and tensor.dim() == 4:
                features[key] = torch.empty(
                    tensor.shape, dtype=torch.float32, memory_format=torch.channels_last
                ).copy_(tensor)
            else:
                features[key] = tensor.float()
        return features


class SamLikeSegmenter(CheckpointSegmenter):
    """Base of the segment-anything-API families (see the module docstring). Thread-safe."""

    transform_class: Any = None  # set by subclasses: the package's ResizeLongestSide

    def _decode(
        self, features: dict[str, torch.Tensor], sparse: torch.Tensor, dense: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """``(low-res mask logits 1xCxhxw, iou 1xC, indexed)``; ``indexed``: C outputs in token order."""
        raise NotImplementedError

    def _prepare_transforms(self) -> None:
        self.transform = self.transform_class(self.model.image_encoder.img_size)
        self._dense_pe_tensor: torch.Tensor | None = None

    def _preprocess(
        self, images: Sequence[np.ndarray]
    ) -> tuple[torch.Tensor, list[tuple[tuple[int, int], tuple[int, int]]]]:
        """``SamPredictor.set_image``'s input: ``ResizeLongestSide``, then the model's ``preprocess``
        (normalise, pad to square)."""
        tensors, sizes = [], []
        for rgb in images:
            input_image = self.transform.apply_image(rgb)
            tensor = torch.as_tensor(input_image, device=self.device).permute(2, 0, 1).contiguous()[None]
            tensors.append(self.model.preprocess(tensor))
            sizes.append(
                ((int(rgb.shape[0]), int(rgb.shape[1])), (int(tensor.shape[-2]), int(tensor.shape[-1])))
            )
        return torch.cat(tensors, dim=0), sizes

    def _dense_pe(self) -> torch.Tensor:
        """The prompt encoder's positional encoding of the embedding grid: a function of the weights only,
        computed once (two threads racing here compute the same tensor)."""
        if self._dense_pe_tensor is None:
            with torch.inference_mode():
                self._dense_pe_tensor = self.model.prompt_encoder.get_dense_pe()
        return self._dense_pe_tensor

    def _decode_prompt(
        self,
        embedding: Embedding,
        prompt: Prompt,
        multimask: bool,
        features: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Prompt transform, prompt encoder and mask decoder for one validated prompt, as
        ``SamPredictor.predict`` / ``predict_torch``: ``(low-res logits 1xCxhxw, iou 1xC, indexed)``. Call
        under ``torch.inference_mode()``; ``features``: ``_device_features(embedding)``, when the caller decodes
        several prompts on one embedding and converts them once."""
        points = None
        if prompt.coords.shape[0]:
            # Same float64 coordinate transform as SamPredictor.predict, then float32 like it.
            coords_t = self.transform.apply_coords(prompt.coords, embedding.original_size)
            coords_torch = torch.as_tensor(coords_t, dtype=torch.float, device=self.device)[None, :, :]
            labels_torch = torch.as_tensor(prompt.labels, dtype=torch.int, device=self.device)[None, :]
            points = (coords_torch, labels_torch)
        boxes = None
        if prompt.box is not None:
            box_t = self.transform.apply_boxes(prompt.box, embedding.original_size)
            boxes = torch.as_tensor(box_t, dtype=torch.float, device=self.device)[None, :]
        if features is None:
            features = self._device_features(embedding)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
        return self._decode(features, sparse, dense, multimask)

    def _predict(self, embedding: Embedding, prompt: Prompt, multimask: bool) -> list[MaskCandidate]:
        """Masks as the package's ``SamPredictor.predict`` computes them on the same (float16-rounded)
        features, best predicted IoU first."""
        with torch.inference_mode():
            low_res, iou, indexed = self._decode_prompt(embedding, prompt, multimask)
            masks = self.model.postprocess_masks(low_res, embedding.input_size, embedding.original_size)
            masks = (masks > self.model.mask_threshold)[0].cpu().numpy()
            scores = iou[0].float().cpu().numpy()
        return sorted_candidates(masks, scores, indexed=indexed and multimask)
