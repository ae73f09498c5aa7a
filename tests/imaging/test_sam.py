"""SAM backend: loader, architecture inference, fidelity to upstream SamPredictor, threads, fingerprints."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from imaging.errors import CheckpointError
from imaging.sam import (
    KNOWN_MODELS,
    SamConfig,
    SamSegmenter,
    build_sam_model,
    checkpoint_fingerprint,
    infer_sam_config,
    peek_sam_config,
)
from imaging.segmenter import Embedding, MaskCandidate, Segmenter
from imaging.tiny_sam import TINY_CONFIG, build_tiny_sam_checkpoint
from tests.fixtures.sam_reference import Fidelity, assert_tensors_close, upstream_predictor


def random_prompts(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(1, 6))
    coords = np.stack([rng.integers(0, width, n), rng.integers(0, height, n)], axis=1).astype(np.float32)
    labels = rng.integers(0, 2, n).astype(np.int32)
    labels[0] = 1
    return coords, labels


def check_against_upstream(
    fidelity: Fidelity, ours: list[MaskCandidate], predictor: SamPredictor, coords, labels
) -> None:
    masks, scores, _ = predictor.predict(point_coords=coords, point_labels=labels, multimask_output=True)
    assert len(ours) == 3
    fidelity.candidates(ours, masks, scores)


# -- loading and architecture inference ---------------------------------------------------------------------


def test_tiny_checkpoint_loads_through_the_real_loader(tiny_sam, tiny_sam_checkpoint):
    assert isinstance(tiny_sam, Segmenter)
    assert tiny_sam.backend == "sam" and tiny_sam.cacheable is True
    assert tiny_sam.device == "cpu"
    assert tiny_sam.model_type == "custom"
    assert tiny_sam.config == TINY_CONFIG
    assert tiny_sam.fingerprint.endswith(checkpoint_fingerprint(tiny_sam_checkpoint))


def shape_only_state_dict(config: SamConfig) -> dict[str, torch.Tensor]:
    """The state dict of a full-size model built on the meta device: shapes without allocating weights."""
    with torch.device("meta"):
        model = build_sam_model(config)
    return model.state_dict()


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_config_inference_for_published_models(model_type):
    dim, depth, heads, globals_ = KNOWN_MODELS[model_type]
    config = SamConfig(dim, depth, heads, globals_, window_size=14, model_type=model_type)
    state = shape_only_state_dict(config)
    assert state["image_encoder.patch_embed.proj.weight"].is_meta
    assert infer_sam_config(state) == config


def test_config_inference_for_custom_vit():
    config = SamConfig(96, 5, 3, (0, 4), window_size=8, model_type="custom", mlp_ratio=2.0)
    assert infer_sam_config(shape_only_state_dict(config)) == config


def test_model_type_is_not_taken_from_the_file_name(tmp_path):
    misnamed = build_tiny_sam_checkpoint(tmp_path / "sam_vit_h_4b8939.pth")
    assert peek_sam_config(misnamed).model_type == "custom"


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        SamSegmenter(tmp_path / "nope.pth")


def test_truncated_checkpoint(tmp_path, tiny_sam_checkpoint):
    data = tiny_sam_checkpoint.read_bytes()
    broken = tmp_path / "broken.pth"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        SamSegmenter(broken)


def test_empty_and_text_files(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        SamSegmenter(empty)
    text = tmp_path / "readme.pth"
    text.write_text("these are not the weights you are looking for\n" * 10)
    with pytest.raises(CheckpointError):
        SamSegmenter(text)


def test_foreign_checkpoint(tmp_path):
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(10)}, foreign)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        SamSegmenter(foreign)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_checkpoint_needing_code_execution_is_refused(tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"x": _Evil()}, fh)
    with pytest.raises(CheckpointError):
        SamSegmenter(evil)


def test_inconsistent_tensors_are_refused(tmp_path, tiny_sam_checkpoint):
    state = torch.load(tiny_sam_checkpoint, weights_only=True)
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="does not match"):
        SamSegmenter(bad)


def test_wrapped_state_dict_is_accepted(tmp_path, tiny_sam_checkpoint):
    state = torch.load(tiny_sam_checkpoint, weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": state}, wrapped)
    assert SamSegmenter(wrapped).config == TINY_CONFIG


# -- fingerprints ------------------------------------------------------------------------------------------


def test_fingerprint_is_content_based_and_stable_across_processes(tmp_path, tiny_sam_checkpoint):
    copy = tmp_path / "copy_of_tiny.pth"
    copy.write_bytes(tiny_sam_checkpoint.read_bytes())
    assert checkpoint_fingerprint(copy) == checkpoint_fingerprint(tiny_sam_checkpoint)
    other = build_tiny_sam_checkpoint(tmp_path / "other.pth", seed=1)
    assert checkpoint_fingerprint(other) != checkpoint_fingerprint(tiny_sam_checkpoint)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from imaging.sam import checkpoint_fingerprint as f; print(f({str(copy)!r}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == checkpoint_fingerprint(tiny_sam_checkpoint)


def test_same_seed_gives_identical_checkpoint(tmp_path):
    a = build_tiny_sam_checkpoint(tmp_path / "a.pth", seed=3)
    b = build_tiny_sam_checkpoint(tmp_path / "b.pth", seed=3)
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- encode / predict ----------------------------------------------------------------------------------------


def test_encode_produces_float16_embedding(tiny_sam, coffee):
    before = tiny_sam.encode_calls
    embedding = tiny_sam.encode(coffee)
    assert tiny_sam.encode_calls == before + 1
    assert isinstance(embedding, Embedding)
    assert embedding.features.dtype == np.float16 and embedding.features.shape == (1, 256, 64, 64)
    assert embedding.original_size == (400, 600)
    assert embedding.input_size == (683, 1024)
    assert embedding.fingerprint == tiny_sam.fingerprint
    tiny_sam.predict(embedding, np.array([[10, 10]]), np.array([1]))
    assert tiny_sam.encode_calls == before + 1  # prediction never re-encodes


def test_fidelity_with_upstream_predictor_on_50_prompt_sets(tiny_sam, tiny_sam_checkpoint, coffee, capsys):
    """Same checkpoint, image and points as segment-anything's SamPredictor: every mask IoU >= 0.999 and every
    score within 1e-4 of its (bit-identical where this CPU's kernels round alike; the count is printed)."""
    embedding = tiny_sam.encode(coffee)
    predictor = upstream_predictor(tiny_sam_checkpoint, coffee)
    fidelity = Fidelity("tiny SAM, 50 prompt sets")
    fidelity.features(embedding.features, predictor.features)
    rng = np.random.default_rng(2024)
    sizes = []
    for _ in range(50):
        coords, labels = random_prompts(rng, 600, 400)
        ours = tiny_sam.predict(embedding, coords, labels)
        check_against_upstream(fidelity, ours, predictor, coords, labels)
        sizes.extend(c.area for c in ours)
    # The random tiny model is still useful for previews: masks are neither all empty nor all full.
    assert any(0 < s < 400 * 600 for s in sizes)
    with capsys.disabled():
        print(f"\n{fidelity.report()}")


def test_single_mask_output(tiny_sam, coffee):
    embedding = tiny_sam.encode(coffee)
    out = tiny_sam.predict(embedding, np.array([[300, 200]]), np.array([1]), multimask=False)
    assert len(out) == 1 and out[0].mask.shape == (400, 600)


def test_predict_rejects_foreign_embedding_and_empty_prompt(tiny_sam, coffee):
    embedding = tiny_sam.encode(coffee)
    foreign = Embedding(embedding.features, embedding.original_size, embedding.input_size, "classical-v1")
    with pytest.raises(ValueError, match="different segmenter"):
        tiny_sam.predict(foreign, np.array([[1, 1]]), np.array([1]))
    with pytest.raises(ValueError, match="at least one point"):
        tiny_sam.predict(embedding, np.zeros((0, 2)), np.zeros(0))


def test_thread_safety(tiny_sam, coffee, astronaut):
    """Concurrent encodes and predicts on different images give exactly the sequential results."""
    emb_coffee = tiny_sam.encode(coffee)
    emb_astro = tiny_sam.encode(astronaut)
    rng = np.random.default_rng(7)
    jobs = []
    for i in range(8):
        emb = emb_coffee if i % 2 else emb_astro
        w, h = emb.original_size[1], emb.original_size[0]
        jobs.append((emb, *random_prompts(rng, w, h)))
    expected = [tiny_sam.predict(e, c, lab) for e, c, lab in jobs]
    results: dict[int, list[MaskCandidate]] = {}
    encoded: dict[int, Embedding] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            if worker < 2:
                encoded[worker] = tiny_sam.encode(coffee if worker == 0 else astronaut)
            for i in range(worker, len(jobs), 4):
                results[i] = tiny_sam.predict(*jobs[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert np.array_equal(encoded[0].features, emb_coffee.features)
    assert np.array_equal(encoded[1].features, emb_astro.features)
    for i, exp in enumerate(expected):
        assert [c.score for c in results[i]] == [c.score for c in exp]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(results[i], exp, strict=True))


def test_mask_candidate_properties():
    mask = np.zeros((10, 20), dtype=bool)
    assert MaskCandidate(mask, 0.5).area == 0 and MaskCandidate(mask, 0.5).bbox is None
    mask[2:5, 7:9] = True
    candidate = MaskCandidate(mask, 0.9)
    assert candidate.area == 6 and candidate.bbox == (7, 2, 8, 4)


@pytest.mark.slow
def test_fidelity_with_upstream_on_vit_b_random_weights(tmp_path, astronaut, capsys):
    checkpoint = tmp_path / "sam_vit_b_random.pth"
    from imaging.tiny_sam import build_vit_b_random_checkpoint

    build_vit_b_random_checkpoint(checkpoint, seed=0)
    segmenter = SamSegmenter(checkpoint, device="cpu")
    assert segmenter.model_type == "vit_b"
    image = astronaut[:384]  # non-square: exercises padding and the size bookkeeping
    embedding = segmenter.encode(image)
    predictor = upstream_predictor(checkpoint, image)
    fidelity = Fidelity("vit_b, 50 prompt sets")
    fidelity.features(embedding.features, predictor.features)
    rng = np.random.default_rng(5)
    for _ in range(50):
        coords, labels = random_prompts(rng, 512, 384)
        check_against_upstream(
            fidelity, segmenter.predict(embedding, coords, labels), predictor, coords, labels
        )
    with capsys.disabled():
        print(f"\n{fidelity.report()}")


# -- speed levers: best-only prediction, chunked global attention ---------------------------------------------


def test_predict_chosen_many_equals_predict_per_template(tiny_sam, coffee):
    """All templates of an image in one call: each gets exactly the candidate predict() + choose_candidate()
    give it alone (points, a box, or both; "best" or a candidate index)."""
    from imaging.segmenter import Prompt, choose_candidate

    embedding = tiny_sam.encode(coffee)
    height, width = coffee.shape[:2]
    rng = np.random.default_rng(12)
    for _ in range(10):
        prompts = []
        for _ in range(int(rng.integers(1, 5))):
            coords, labels = random_prompts(rng, width, height)
            box = None
            if rng.random() < 0.5:
                x0, y0 = rng.uniform(0, width / 2), rng.uniform(0, height / 2)
                box = (x0, y0, x0 + rng.uniform(20, width / 2), y0 + rng.uniform(20, height / 2))
            choice = ["best", 0, 1, 2][int(rng.integers(0, 4))]
            prompts.append(Prompt(coords=coords, labels=labels, box=box, mask_choice=choice))
        prompts.append(prompts[0])  # a repeated prompt is decoded once and gets the same answer
        chosen = tiny_sam.predict_chosen_many(embedding, prompts)
        assert len(chosen) == len(prompts)
        for prompt, got in zip(prompts, chosen, strict=True):
            candidates = tiny_sam.predict(embedding, prompt.coords, prompt.labels, box=prompt.box)
            expected = choose_candidate(candidates, prompt.mask_choice)
            assert (got.score, got.index) == (expected.score, expected.index)
            assert got.mask.dtype == np.bool_ and np.array_equal(got.mask, expected.mask)
    assert tiny_sam.predict_chosen_many(embedding, []) == []
    with pytest.raises(ValueError):
        tiny_sam.predict_chosen_many(embedding, [Prompt(coords=np.zeros((0, 2)), labels=np.zeros(0))])


def test_best_only_upsampling_matches_the_full_upstream_path(
    tiny_sam, tiny_sam_checkpoint, astronaut, capsys
):
    """Only the chosen candidate is upsampled; it is upstream SamPredictor's full-size mask of the highest
    score (IoU >= 0.999, score within 1e-4; bit-identical where this CPU rounds alike), on 50 prompt sets at
    1280x960. The low-resolution choice is the same: the candidate index matches upstream's argmax."""
    import cv2

    from imaging.segmenter import Prompt

    image = cv2.resize(astronaut, (1280, 960), interpolation=cv2.INTER_AREA)
    embedding = tiny_sam.encode(image)
    predictor = upstream_predictor(tiny_sam_checkpoint, image)
    rng = np.random.default_rng(99)
    prompts = [random_prompts(rng, 1280, 960) for _ in range(50)]
    ours = tiny_sam.predict_chosen_many(embedding, [Prompt(coords=c, labels=lab) for c, lab in prompts])
    fidelity = Fidelity("best-only upsampling at 1280x960")
    for (coords, labels), got in zip(prompts, ours, strict=True):
        masks, scores, _ = predictor.predict(point_coords=coords, point_labels=labels, multimask_output=True)
        best = int(np.argmax(scores))
        top_two = np.sort(scores)[-2:]
        if top_two[1] - top_two[0] > 1e-5:  # a near-tie may pick either under another kernel's rounding
            assert got.index == best
        fidelity.pair(got, masks[got.index], float(scores[got.index]))
    with capsys.disabled():
        print(f"\n{fidelity.report()}")


def test_chunked_global_attention_matches_upstream(monkeypatch):
    """The chunked forward gives upstream's attention output (to float32 rounding: the chunks' matrix
    products may be blocked differently by the CPU's kernels), with ragged chunks too."""
    import imaging.sam as sam_module

    torch.manual_seed(3)
    model = build_sam_model(TINY_CONFIG)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("rel_pos_h", "rel_pos_w")):
                param.copy_(torch.randn(param.shape) * 0.02)
    block = model.image_encoder.blocks[1]
    assert block.window_size == 0
    x = torch.randn(1, 64, 64, TINY_CONFIG.encoder_embed_dim)
    with torch.inference_mode():
        expected = block.attn(x)
        assert sam_module.use_chunked_global_attention(model) == len(TINY_CONFIG.encoder_global_attn_indexes)
        assert "forward" not in vars(model.image_encoder.blocks[0].attn)  # windowed blocks keep upstream's
        # The default (2 chunks), 9 ragged chunks of 7-8 rows, 32 chunks of 2 rows.
        for chunk in (sam_module.ATTENTION_CHUNK_ELEMENTS, 2 * 7 * 64 * 4096, 2 * 2 * 64 * 4096):
            monkeypatch.setattr(sam_module, "ATTENTION_CHUNK_ELEMENTS", chunk)
            assert_tensors_close(block.attn(x), expected)
    # Only this instance changed: a freshly built model still runs segment-anything's own forward.
    assert "forward" not in vars(build_sam_model(TINY_CONFIG).image_encoder.blocks[1].attn)


def test_segmenter_model_uses_chunked_attention(tiny_sam):
    global_blocks = [b for b in tiny_sam.model.image_encoder.blocks if b.window_size == 0]
    assert global_blocks and all("forward" in vars(b.attn) for b in global_blocks)


@pytest.mark.parametrize("family", ["sam", "mobile_sam"])
def test_token_layout_decoder_gives_upstreams_logits(family, tmp_path, tiny_sam_checkpoint):
    """The CPU decoder path (channels-last maps, the image-to-token softmax along the queries, the upscaling
    as per-pixel matrix products) returns the logits and scores of the package's own
    ``MaskDecoder.predict_masks`` to float32 rounding: batched prompts of points, boxes and mask inputs, one
    prompt and a batch (which runs upstream's own code), on random features."""
    from imaging.families import load_segmenter
    from imaging.sam import _predict_masks_in_token_layout
    from imaging.tiny_families import build_family_checkpoint

    path = tiny_sam_checkpoint if family == "sam" else build_family_checkpoint(family, tmp_path / "m.pth")
    segmenter = load_segmenter(path)
    decoder = segmenter.model.mask_decoder
    assert decoder.predict_masks.__func__ is _predict_masks_in_token_layout  # installed on the CPU
    upstream = type(decoder).predict_masks.__get__(decoder)
    prompt_encoder = segmenter.model.prompt_encoder
    generator = torch.Generator().manual_seed(5)
    with torch.inference_mode():
        image_pe = prompt_encoder.get_dense_pe()
        grid = image_pe.shape[-1]
        for batch in (1, 3):
            features = torch.randn(1, image_pe.shape[1], grid, grid, generator=generator)
            coords = torch.rand(batch, 3, 2, generator=generator) * 1024
            labels = torch.randint(0, 2, (batch, 3), generator=generator)
            boxes = torch.sort(torch.rand(batch, 2, 2, generator=generator) * 1024, dim=1).values.reshape(
                batch, 4
            )
            masks = torch.randn(batch, 1, 4 * grid, 4 * grid, generator=generator)
            for prompt in (
                {"points": (coords, labels)},
                {"boxes": boxes},
                {"points": (coords, labels), "masks": masks},
            ):
                sparse, dense = prompt_encoder(**{"points": None, "boxes": None, "masks": None} | prompt)
                ours = decoder.predict_masks(features, image_pe, sparse, dense)
                theirs = upstream(features, image_pe, sparse, dense)
                assert_tensors_close(ours[0], theirs[0])
                assert_tensors_close(ours[1], theirs[1])


@pytest.mark.parametrize(
    "tokens", [7, 15, 16, 40]
)  # 8 heads x 15 < 128 channels: factored; 16, 40: upstream's
def test_cross_attention_between_prompt_and_image_matches_upstream(tokens, monkeypatch):
    """Both factored decoder attentions (prompt tokens to image tokens and back, the image side never
    projected) give upstream ``Attention.forward``'s output; past ``heads x tokens >= channels`` they run
    upstream's own forward."""
    from segment_anything.modeling.transformer import Attention as DecoderAttention

    import imaging.sam as sam_module

    torch.manual_seed(3)
    attention = DecoderAttention(256, 8, downsample_rate=2).eval()
    prompt, image = torch.randn(2, tokens, 256), torch.randn(2, 4096, 256)
    upstream_calls = []
    original = DecoderAttention.forward
    monkeypatch.setattr(
        DecoderAttention, "forward", lambda self, *a: upstream_calls.append(1) or original(self, *a)
    )
    with torch.inference_mode():
        for forward, (q, kv) in (
            (sam_module._token_to_image_attention_forward, (prompt, image)),
            (sam_module._image_to_token_attention_forward, (image, prompt)),
        ):
            expected = original(attention, q, kv, kv)
            ours = forward(attention, q, kv, kv)
            assert ours.shape == expected.shape
            assert_tensors_close(ours, expected)
    assert len(upstream_calls) == (0 if 8 * tokens < 128 else 2)


def test_pixelwise_upscaling_matches_output_upscaling(tiny_sam):
    """The per-pixel matrices reproduce ``output_upscaling`` on a channels-last token map, pixel for pixel."""
    from imaging.sam import _PixelwiseUpscaling

    upscaling = tiny_sam.model.mask_decoder.output_upscaling
    pixelwise = _PixelwiseUpscaling.of(upscaling)
    channels = upscaling[0].in_channels
    tokens = torch.randn(1, channels, 8, 6, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = upscaling(tokens)  # 1 x C/8 x 32 x 24
        flat = pixelwise(tokens.permute(0, 2, 3, 1).reshape(48, channels), 8, 6)  # (I, J, a2, b2) x C/8
        ours = flat.view(16, 12, 2, 2, -1).permute(4, 0, 2, 1, 3).reshape(1, -1, 32, 24)
    assert_tensors_close(ours, expected)


def test_decoder_of_another_structure_keeps_upstreams_path(tmp_path):
    """A decoder whose upscaling is not two 2x2 stride-2 transposed convolutions is left as it is."""
    from imaging.sam import _PixelwiseUpscaling, use_token_layout_mask_decoder

    model = build_sam_model(TINY_CONFIG)
    upscaling = model.mask_decoder.output_upscaling
    channels = upscaling[0].in_channels
    upscaling[0] = torch.nn.ConvTranspose2d(channels, channels // 4, kernel_size=4, stride=2, padding=1)
    assert _PixelwiseUpscaling.of(upscaling) is None
    assert use_token_layout_mask_decoder(model) is False
    assert "predict_masks" not in vars(model.mask_decoder)
    assert all(
        "forward" not in vars(layer.cross_attn_image_to_token)
        for layer in model.mask_decoder.transformer.layers
    )
