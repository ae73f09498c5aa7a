"""Model families: detection from tensors, loading, fidelity to each upstream predictor, box prompts, cache.

Fidelity, per family (same checkpoint, image and prompts; the upstream predictor is fed the same
float16-rounded features we store, as in test_sam.py), to the bar of ``tests.fixtures.sam_reference``
(mask IoU >= 0.999, score within 1e-4, bit-identical where the CPU's kernels round alike):

- SAM 1 (box and points + box): ``segment_anything.SamPredictor``.
- MobileSAM: ``mobile_sam.SamPredictor`` (same modules, same path).
- SAM-HQ: ``segment_anything_hq.SamPredictor`` (``hq_token_only=False``; one fused mask).
- SAM 2.1: ``sam2.sam2_image_predictor.SAM2ImagePredictor``.

Sizes: MobileSAM and SAM-HQ use a shrunk TinyViT (and SAM-HQ also the tiny 2-block ViT) built with the
packages' own model classes, which our loader reads back from the tensors; SAM 2.1 uses hiera_tiny, its
smallest size, built by ``sam2.build_sam.build_sam2`` (its head count is not in the tensors, so it cannot be
shrunk and still be recognised). Published TinyViT sizes are checked for detection, and fidelity on them
is a slow test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from imaging.embedding_cache import EmbeddingCache
from imaging.errors import CheckpointError
from imaging.families import detect_family, load_segmenter, peek_checkpoint
from imaging.registry import (
    SegmenterConfig,
    get_segmenter,
    list_checkpoints,
    loaded_models,
    reset_segmenters,
    segmenter_status,
)
from imaging.sam import SamSegmenter, save_state_dict
from imaging.segmenter import Segmenter
from imaging.tiny_families import TINY_TINYVIT, build_family_checkpoint, random_state_dict
from tests.fixtures.sam_reference import Fidelity

POINTS = (np.array([[300.0, 200.0], [120.0, 90.0]], dtype=np.float32), np.array([1, 0], dtype=np.int32))
BOX = (140.0, 60.0, 460.0, 330.0)
PROMPTS = {
    "points": (POINTS[0], POINTS[1], None),
    "box": (None, None, BOX),
    "points+box": (POINTS[0][:1], POINTS[1][:1], BOX),
}


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="session")
def ckpt(family_dir):
    """Builds (once per session) the checkpoint of a kind of imaging.tiny_families."""
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            built[kind] = build_family_checkpoint(kind, family_dir / f"{kind}.pth", seed=0)
        return built[kind]

    return get


@pytest.fixture(scope="session")
def loaded(ckpt, coffee):
    """(segmenter, embedding of coffee) per kind, once per session."""
    cache: dict[str, tuple] = {}

    def get(kind: str):
        if kind not in cache:
            segmenter = load_segmenter(ckpt(kind), device="cpu")
            cache[kind] = (segmenter, segmenter.encode(coffee))
        return cache[kind]

    return get


@pytest.fixture
def fidelity(request, capsys):
    """A :class:`~tests.fixtures.sam_reference.Fidelity` named after the test, reported in its output."""
    record = Fidelity(request.node.name)
    yield record
    with capsys.disabled():
        print(f"\n{record.report()}")


# -- detection ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "family", "size", "label"),
    [
        ("mobile_sam_tiny", "mobile_sam", "custom", "MobileSAM custom"),
        ("sam_hq_tiny_tinyvit", "sam_hq", "custom", "SAM-HQ custom"),
        ("sam_hq_tiny_vit", "sam_hq", "custom", "SAM-HQ custom"),
        ("sam2_hiera_tiny", "sam2", "hiera_tiny", "SAM 2.1 hiera_tiny"),
    ],
)
def test_family_is_read_from_tensors_not_the_name(ckpt, family_dir, kind, family, size, label):
    misnamed = family_dir / f"sam_vit_h_4b8939-{kind}.pth"
    if not misnamed.exists():
        shutil.copy(ckpt(kind), misnamed)
    info = peek_checkpoint(misnamed)
    assert (info.family, info.size, info.label) == (family, size, label)
    if kind.endswith("tinyvit") or kind == "mobile_sam_tiny":
        assert info.config == TINY_TINYVIT


@pytest.mark.parametrize(
    ("kind", "family", "size"),
    [("mobile_sam", "mobile_sam", "vit_t"), ("sam_hq_vit_tiny", "sam_hq", "vit_tiny")],
)
def test_published_tinyvit_sizes_are_recognised(kind, family, size):
    info = detect_family(random_state_dict(kind))
    assert (info.family, info.size) == (family, size)
    assert info.label == ("MobileSAM" if family == "mobile_sam" else "SAM-HQ vit_tiny")


def test_unknown_checkpoint_is_refused_naming_what_was_found(tmp_path):
    odd = tmp_path / "detector.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(8, 3, 3, 3), "head.fc.bias": torch.zeros(10)}, odd)
    with pytest.raises(CheckpointError) as exc:
        load_segmenter(odd)
    message = str(exc.value)
    assert "known model family" in message
    assert "backbone.conv1" in message and "head.fc" in message and "[8, 3, 3, 3]" in message


def test_sam2_of_unpublished_size_is_refused(tmp_path, ckpt):
    state = torch.load(ckpt("sam2_hiera_tiny"), weights_only=True)["model"]
    state = {k: v for k, v in state.items() if not k.startswith("image_encoder.trunk.blocks.11.")}
    with pytest.raises(CheckpointError, match=r"stages \[1, 2, 7, 1\]"):
        detect_family(state)


def test_sam_loader_names_the_other_family(ckpt):
    with pytest.raises(CheckpointError, match="is a MobileSAM custom checkpoint"):
        SamSegmenter(ckpt("mobile_sam_tiny"))


def test_every_family_follows_the_protocol(loaded):
    fingerprints = set()
    for kind in ("mobile_sam_tiny", "sam_hq_tiny_tinyvit", "sam2_hiera_tiny"):
        segmenter, embedding = loaded(kind)
        assert isinstance(segmenter, Segmenter)
        assert segmenter.backend == "sam" and segmenter.cacheable
        assert segmenter.family in segmenter.fingerprint and segmenter.model_type in segmenter.fingerprint
        assert embedding.fingerprint == segmenter.fingerprint
        assert all(a.dtype == np.float16 for a in embedding.arrays().values())
        fingerprints.add(segmenter.fingerprint)
    assert len(fingerprints) == 3
    sam2_arrays = loaded("sam2_hiera_tiny")[1].arrays()
    assert {k: v.shape for k, v in sam2_arrays.items()} == {
        "image_embed": (1, 256, 64, 64),
        "high_res_0": (1, 32, 256, 256),
        "high_res_1": (1, 64, 128, 128),
    }


# -- fidelity with the upstream predictors -------------------------------------------------------------------


def test_mobile_sam_matches_upstream_predictor(loaded, ckpt, coffee, fidelity):
    """mobile_sam's SamPredictor (same modules, features rounded to float16)."""
    from mobile_sam import SamPredictor

    from imaging.mobile_sam import build_mobile_sam_model

    segmenter, embedding = loaded("mobile_sam_tiny")
    model = build_mobile_sam_model(TINY_TINYVIT)
    model.load_state_dict(torch.load(ckpt("mobile_sam_tiny"), weights_only=True))
    predictor = SamPredictor(model)
    predictor.set_image(coffee)
    fidelity.features(embedding.arrays()["image_embed"], predictor.features)
    predictor.features = predictor.features.half().float()
    for coords, labels, box in PROMPTS.values():
        masks, scores, _ = predictor.predict(
            point_coords=coords, point_labels=labels, box=None if box is None else np.array(box)
        )
        fidelity.candidates(segmenter.predict(embedding, coords, labels, box), masks, scores)


@pytest.mark.parametrize("kind", ["sam_hq_tiny_tinyvit", "sam_hq_tiny_vit"])
def test_sam_hq_matches_upstream_predictor(loaded, ckpt, coffee, kind, fidelity):
    """segment_anything_hq's SamPredictor (hq_token_only=False: one fused mask)."""
    from segment_anything_hq import SamPredictor

    from imaging.sam_hq import build_sam_hq_model

    segmenter, embedding = loaded(kind)
    model = build_sam_hq_model(segmenter.config)
    model.load_state_dict(torch.load(ckpt(kind), weights_only=True))
    predictor = SamPredictor(model)
    predictor.set_image(coffee)
    arrays = embedding.arrays()
    fidelity.features(arrays["image_embed"], predictor.features)
    fidelity.features(arrays["interm"], predictor.interm_features[0])
    predictor.features = predictor.features.half().float()
    predictor.interm_features = [t.half().float() for t in predictor.interm_features]
    for coords, labels, box in PROMPTS.values():
        masks, scores, _ = predictor.predict(
            point_coords=coords, point_labels=labels, box=None if box is None else np.array(box)
        )
        ours = segmenter.predict(embedding, coords, labels, box)
        assert len(ours) == 1
        fidelity.candidates(ours, masks, scores, indexed=False)


def _sam2_predictor(checkpoint: Path):
    import sam2  # noqa: F401
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", str(checkpoint), device="cpu"))


def test_sam2_matches_upstream_predictor(loaded, ckpt, coffee, fidelity):
    """SAM2ImagePredictor.predict on the same float16 features (the encoder's agreement with set_image is the
    slow test below: a second hiera encode)."""
    segmenter, embedding = loaded("sam2_hiera_tiny")
    predictor = _sam2_predictor(ckpt("sam2_hiera_tiny"))
    arrays = {k: torch.from_numpy(v.copy()).float() for k, v in embedding.arrays().items()}
    predictor._features = {
        "image_embed": arrays["image_embed"],
        "high_res_feats": [arrays["high_res_0"], arrays["high_res_1"]],
    }
    predictor._orig_hw = [coffee.shape[:2]]
    predictor._is_image_set = True
    for coords, labels, box in PROMPTS.values():
        masks, scores, _ = predictor.predict(
            point_coords=coords, point_labels=labels, box=None if box is None else np.array(box)
        )
        fidelity.candidates(segmenter.predict(embedding, coords, labels, box), masks, scores)


@pytest.mark.slow
def test_sam2_encoder_matches_upstream_set_image(loaded, ckpt, coffee, fidelity):
    _, embedding = loaded("sam2_hiera_tiny")
    predictor = _sam2_predictor(ckpt("sam2_hiera_tiny"))
    predictor.set_image(coffee)
    arrays = embedding.arrays()
    fidelity.features(arrays["image_embed"], predictor._features["image_embed"])
    for i, feat in enumerate(predictor._features["high_res_feats"]):
        fidelity.features(arrays[f"high_res_{i}"], feat)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mobile_sam", "sam_hq_vit_tiny"])
def test_published_tinyvit_models_match_upstream(ckpt, coffee, kind, fidelity):
    segmenter = load_segmenter(ckpt(kind), device="cpu")
    embedding = segmenter.encode(coffee)
    if kind == "mobile_sam":
        from mobile_sam import SamPredictor, sam_model_registry
    else:
        from segment_anything_hq import SamPredictor, sam_model_registry
    model = sam_model_registry["vit_t" if kind == "mobile_sam" else "vit_tiny"]()
    model.load_state_dict(torch.load(ckpt(kind), weights_only=True))
    predictor = SamPredictor(model)
    predictor.set_image(coffee)
    predictor.features = predictor.features.half().float()
    if kind != "mobile_sam":
        predictor.interm_features = [t.half().float() for t in predictor.interm_features]
    for coords, labels, box in PROMPTS.values():
        masks, scores, _ = predictor.predict(
            point_coords=coords, point_labels=labels, box=None if box is None else np.array(box)
        )
        fidelity.candidates(
            segmenter.predict(embedding, coords, labels, box), masks, scores, indexed=kind == "mobile_sam"
        )


def test_sam1_box_prompts_match_upstream(tiny_sam, tiny_sam_checkpoint, coffee, fidelity):
    """SAM 1 with a box, and with points + box: segment_anything's SamPredictor."""
    from tests.fixtures.sam_reference import upstream_predictor

    embedding = tiny_sam.encode(coffee)
    predictor = upstream_predictor(tiny_sam_checkpoint, coffee)
    for name in ("box", "points+box"):
        coords, labels, box = PROMPTS[name]
        masks, scores, _ = predictor.predict(point_coords=coords, point_labels=labels, box=np.array(box))
        fidelity.candidates(tiny_sam.predict(embedding, coords, labels, box), masks, scores)


# -- encode_batch, cache, registry -------------------------------------------------------------------------


def test_encode_batch_on_cpu_equals_encode(loaded, coffee, astronaut):
    segmenter, embedding = loaded("mobile_sam_tiny")
    before = segmenter.encode_calls
    batch = segmenter.encode_batch([coffee, astronaut[:300]], batch_size=2)
    assert segmenter.encode_calls == before + 2
    assert np.array_equal(batch[0].arrays()["image_embed"], embedding.arrays()["image_embed"])
    assert batch[1].original_size == (300, 512)


def test_cache_keeps_families_apart_and_round_trips_named_arrays(tmp_path, loaded, coffee):
    cache = EmbeddingCache(tmp_path / "emb", max_bytes=1 << 30)
    sha = "ab" * 32
    mobile, _ = loaded("mobile_sam_tiny")
    sam2_seg, sam2_emb = loaded("sam2_hiera_tiny")
    # Reuse the session's SAM 2 embedding instead of a second hiera encode: the cache sees one encode.
    sam2_calls = []

    class CountingSam2:
        fingerprint = sam2_seg.fingerprint
        cacheable = True

        def encode(self, rgb):
            sam2_calls.append(1)
            return sam2_emb

    before = mobile.encode_calls
    for _ in range(2):
        m_emb, _ = cache.get_or_encode(sha, coffee, mobile)
        s_emb, _ = cache.get_or_encode(sha, coffee, CountingSam2())
    assert mobile.encode_calls == before + 1 and len(sam2_calls) == 1
    assert cache.count() == 2
    assert m_emb.fingerprint != s_emb.fingerprint
    reread = cache.get(sha, sam2_seg.fingerprint)
    assert set(reread.arrays()) == {"image_embed", "high_res_0", "high_res_1"}
    for name, array in sam2_emb.arrays().items():
        assert np.array_equal(reread.arrays()[name], array)
    coords, labels, box = PROMPTS["points+box"]
    first = sam2_seg.predict(sam2_emb, coords, labels, box)
    again = sam2_seg.predict(reread, coords, labels, box)
    assert all(
        np.array_equal(a.mask, b.mask) and a.score == b.score for a, b in zip(first, again, strict=True)
    )
    with pytest.raises(ValueError, match="different segmenter"):
        mobile.predict(reread, coords, labels)


def test_registry_lists_checkpoints_and_bounds_loaded_models(tmp_path, ckpt):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ckpt("mobile_sam_tiny"), models / "a_mobile.pth")
    shutil.copy(ckpt("sam_hq_tiny_tinyvit"), models / "b_hq.pth")
    (models / "c_broken.pth").write_bytes(b"not a checkpoint at all")
    listed = list_checkpoints(models)
    assert [(c.name, c.family, c.label) for c in listed] == [
        ("a_mobile.pth", "mobile_sam", "MobileSAM custom"),
        ("b_hq.pth", "sam_hq", "SAM-HQ custom"),
        ("c_broken.pth", None, None),
    ]
    assert listed[2].error and listed[2].fingerprint is None
    reset_segmenters()
    try:
        first = SegmenterConfig(
            backend="sam", checkpoint=str(models / "a_mobile.pth"), device="cpu", max_loaded_models=1
        )
        second = SegmenterConfig(
            backend="sam", checkpoint=str(models / "b_hq.pth"), device="cpu", max_loaded_models=1
        )
        mobile = get_segmenter(first)
        assert mobile.fingerprint == listed[0].fingerprint
        assert segmenter_status(first)["sam_loaded"] is True
        hq = get_segmenter(second)
        assert hq.fingerprint == listed[1].fingerprint
        assert loaded_models() == [str((models / "b_hq.pth").resolve())]  # the LRU dropped MobileSAM
        status = segmenter_status(first)
        assert status["sam_loaded"] is False and status["family"] == "mobile_sam"
        assert segmenter_status(second) | {"device": "cpu"} == {
            "backend": "sam",
            "sam_loaded": True,
            "model": "custom",
            "family": "sam_hq",
            "label": "SAM-HQ custom",
            "checkpoint": "b_hq.pth",
            "device": "cpu",
            "error": None,
            "model_state": "loaded",
            "model_error": None,
        }
        broken = SegmenterConfig(backend="auto", checkpoint=str(models / "c_broken.pth"))
        status = segmenter_status(broken)
        assert status["backend"] == "sam" and status["family"] is None and "c_broken.pth" in status["error"]
        assert status["model_state"] == "error" and status["model_error"] == status["error"]
        with pytest.raises(CheckpointError):
            get_segmenter(broken)
    finally:
        reset_segmenters()


def test_unknown_checkpoint_status_reports_the_error(tmp_path):
    odd = tmp_path / "odd.pth"
    save_state_dict({"encoder.weight": torch.zeros(4, 4)}, odd)
    status = segmenter_status(SegmenterConfig(backend="sam", checkpoint=str(odd)))
    assert status["sam_loaded"] is False and status["model"] is None
    assert "known model family" in status["error"] and "encoder.weight" in status["error"]


@pytest.mark.parametrize(
    ("dim", "stages", "size"),
    [
        (96, (1, 2, 7, 2), "hiera_tiny"),
        (96, (1, 2, 11, 2), "hiera_small"),
        (112, (2, 3, 16, 3), "hiera_base_plus"),
        (144, (2, 6, 36, 4), "hiera_large"),
    ],
)
@pytest.mark.parametrize("version", ["2.1", "2"])
def test_sam2_sizes_are_read_off_the_trunk(dim, stages, size, version):
    """Shapes only (meta tensors): embed dim from the patch embedding, stages from the projecting blocks."""
    meta = torch.empty(0, device="meta")
    state = {
        "image_encoder.trunk.patch_embed.proj.weight": torch.empty(dim, 3, 7, 7, device="meta"),
        "sam_mask_decoder.iou_token.weight": torch.empty(1, 256, device="meta"),
    }
    starts = {sum(stages[:i]) for i in range(1, len(stages))}
    for block in range(sum(stages)):
        state[f"image_encoder.trunk.blocks.{block}.attn.qkv.weight"] = meta
        if block in starts:
            state[f"image_encoder.trunk.blocks.{block}.proj.weight"] = meta
    if version == "2.1":
        state["no_obj_embed_spatial"] = meta
    info = detect_family(state)
    assert (info.family, info.size, info.label) == ("sam2", size, f"SAM {version} {size}")
    stem = {"hiera_tiny": "t", "hiera_small": "s", "hiera_base_plus": "b+", "hiera_large": "l"}[size]
    folder = "sam2.1" if version == "2.1" else "sam2"
    assert info.config.config_file == f"configs/{folder}/{folder}_hiera_{stem}.yaml"


def test_listed_fingerprints_equal_the_loaded_segmenters(
    tmp_path, loaded, ckpt, tiny_sam, tiny_sam_checkpoint
):
    from imaging.registry import describe_checkpoint

    assert describe_checkpoint(tiny_sam_checkpoint).fingerprint == tiny_sam.fingerprint
    assert (
        describe_checkpoint(ckpt("sam2_hiera_tiny")).fingerprint == loaded("sam2_hiera_tiny")[0].fingerprint
    )
    assert describe_checkpoint(tiny_sam_checkpoint).label == "SAM custom"


@pytest.mark.filterwarnings("ignore:User provided device_type of 'cuda'")
def test_batched_encode_path_matches_per_image(monkeypatch, loaded, tiny_sam, coffee, astronaut):
    """The CUDA batching code (stacking, per-row split, sizes, counts), run on CPU by pretending autocast is
    available (torch disables a 'cuda' autocast without CUDA, so the maths stay fp32): each row equals the
    per-image encode up to float16 rounding of batched kernels."""
    import imaging.sam_like as sam_like

    monkeypatch.setattr(sam_like, "autocast_dtype", lambda device: torch.bfloat16)
    images = [coffee, astronaut[:300]]
    for segmenter in (loaded("mobile_sam_tiny")[0], tiny_sam):
        single = [segmenter.encode(rgb) for rgb in images]
        before = segmenter.encode_calls
        batched = segmenter.encode_batch(images, batch_size=2)
        assert segmenter.encode_calls == before + 2
        for one, many in zip(single, batched, strict=True):
            assert (one.original_size, one.input_size) == (many.original_size, many.input_size)
            assert one.fingerprint == many.fingerprint
            for name, array in one.arrays().items():
                got = many.arrays()[name]
                assert got.shape == array.shape and got.dtype == np.float16
                assert np.allclose(got.astype(np.float32), array.astype(np.float32), atol=2e-2, rtol=1e-2)
