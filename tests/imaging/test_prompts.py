"""Box prompts and the candidate a template's ``mask_choice`` designates (pure helpers + classical)."""

from __future__ import annotations

import numpy as np
import pytest

from imaging.classical import ClassicalSegmenter
from imaging.segmenter import MaskCandidate, check_box, check_prompt, choose_candidate, parse_mask_choice


def _candidates() -> list[MaskCandidate]:
    mask = np.zeros((4, 4), dtype=bool)
    # Best score first, as segmenters return them; index = the model's output position.
    return [
        MaskCandidate(mask, 0.9, index=2),
        MaskCandidate(mask, 0.5, index=0),
        MaskCandidate(mask, 0.1, index=1),
    ]


def test_check_box_sorts_corners_and_refuses_garbage():
    assert check_box(None) is None
    assert check_box((30, 40, 10, 20)).tolist() == [10.0, 20.0, 30.0, 40.0]
    assert check_box(np.array([1, 2, 3, 4])).dtype == np.float32
    for bad in ((1, 2, 3), (0, 0, float("nan"), 1), ("a", 1, 2, 3), object()):
        with pytest.raises(ValueError, match="box"):
            check_box(bad)


def test_points_are_optional_with_a_box_only():
    from imaging.segmenter import Embedding

    emb = Embedding(np.zeros((2, 2, 3), np.uint8), (2, 2), (2, 2), "fp")
    coords, labels = check_prompt(emb, "fp", None, None, (0, 0, 1, 1))
    assert coords.shape == (0, 2) and labels.shape == (0,)
    with pytest.raises(ValueError, match="at least one point"):
        check_prompt(emb, "fp", None, None, None)
    with pytest.raises(ValueError, match="box"):
        check_prompt(emb, "fp", None, None, (0, 0, 1))


def test_mask_choice_values():
    assert parse_mask_choice("best") == parse_mask_choice(None) == "best"
    assert parse_mask_choice(1) == 1 and parse_mask_choice("2") == 2
    for bad in (3, -1, "whole", True, 1.5):
        with pytest.raises(ValueError, match="mask_choice"):
            parse_mask_choice(bad)


def test_choose_candidate_by_index_not_by_rank():
    candidates = _candidates()
    assert choose_candidate(candidates, "best").index == 2
    assert choose_candidate(candidates, 0).score == 0.5
    assert choose_candidate(candidates, 1).score == 0.1
    single = [MaskCandidate(np.zeros((2, 2), bool), 0.3, index=None)]
    assert choose_candidate(single, 1) is single[0]  # one fused mask (SAM-HQ, single output): that one
    with pytest.raises(ValueError):
        choose_candidate([], "best")


def test_classical_box_prompt_stays_in_the_box_and_keeps_granularity(coffee):
    segmenter = ClassicalSegmenter()
    embedding = segmenter.encode(coffee)
    box = (150, 50, 450, 350)
    out = segmenter.predict(embedding, None, None, box=box)
    assert sorted(c.index for c in out) == [0, 1, 2]
    by_index = {c.index: c for c in out}
    # Tight / as drawn / loose: the index means the same scale on every image.
    assert by_index[0].area <= by_index[1].area <= by_index[2].area
    xmin, ymin, xmax, ymax = by_index[1].bbox
    assert xmin >= 150 - 4 and ymin >= 50 - 4 and xmax <= 450 + 4 and ymax <= 350 + 4
    with_point = segmenter.predict(embedding, np.array([[300, 200]]), np.array([1]), box=box)
    assert all(c.mask[200, 300] for c in with_point)
    assert segmenter.predict(embedding, None, None, box=box)[0].score == out[0].score  # deterministic


def test_parse_box_validates_untrusted_input():
    from imaging.errors import BoxValidationError
    from imaging.points import denormalize_box, parse_box

    assert parse_box(None) is None and parse_box([]) is None
    assert parse_box([0.5, 0.6, 0.1, "0.2"]) == (0.1, 0.2, 0.5, 0.6)
    assert parse_box({"x0": 0, "y0": 0, "x1": 1, "y1": 1}) == (0.0, 0.0, 1.0, 1.0)
    for bad, message in (
        ([0, 0, 1], "four numbers"),
        ("0,0,1,1", "four numbers"),
        ([0, 0, 1.5, 1], "x1 must be between 0 and 1"),
        ([0, 0, True, 1], "boolean"),
        ([0.2, 0, 0.2, 1], "non-zero width"),
        ([0, float("inf"), 1, 1], "finite"),
    ):
        with pytest.raises(BoxValidationError, match=message):
            parse_box(bad)
    assert denormalize_box((0.25, 0.5, 1.0, 1.0), 600, 400).tolist() == [150.0, 200.0, 600.0, 400.0]


def test_pipeline_uses_the_template_box_and_mask_choice(coffee):
    from imaging.pipeline import TemplateSpec, segment_templates
    from imaging.points import Point, denormalize_box

    segmenter = ClassicalSegmenter()
    embedding = segmenter.encode(coffee)
    box = (0.25, 0.125, 0.75, 0.875)
    templates = [
        TemplateSpec(id="a", name="box, loose", points=(), box=box, mask_choice=2),
        TemplateSpec(id="b", name="box + point, best", points=(Point(0.5, 0.5),), box=box),
    ]
    masks = segment_templates(segmenter, embedding, templates, width=600, height=400)
    direct = segmenter.predict(embedding, None, None, denormalize_box(box, 600, 400))
    loose = next(c for c in direct if c.index == 2)
    assert np.array_equal(masks[0].mask, loose.mask) and masks[0].score == loose.score
    with_point = segmenter.predict(
        embedding, np.array([[300, 200]], np.float32), np.array([1]), denormalize_box(box, 600, 400)
    )
    assert np.array_equal(masks[1].mask, with_point[0].mask)
    with pytest.raises(ValueError, match="no points and no box"):
        segment_templates(
            segmenter, embedding, [TemplateSpec(id="c", name="empty", points=())], width=600, height=400
        )


def test_encode_batch_helper_falls_back_to_encode(coffee, astronaut):
    from imaging.segmenter import encode_batch

    segmenter = ClassicalSegmenter()
    out = encode_batch(segmenter, [coffee, astronaut], batch_size=4)
    assert [e.original_size for e in out] == [(400, 600), (512, 512)]
    assert segmenter.encode_calls == 2


def test_sam1_encode_batch_on_cpu_equals_encode(tiny_sam, coffee):
    single = tiny_sam.encode(coffee)
    (batched,) = tiny_sam.encode_batch([coffee])
    assert np.array_equal(single.features, batched.features) and batched.fingerprint == tiny_sam.fingerprint
