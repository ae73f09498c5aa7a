"""The variant pipeline: class filter, best-of-3 masks, stack vs each, order and opacity semantics."""

from __future__ import annotations

import numpy as np
import pytest

from imaging.classical import ClassicalSegmenter
from imaging.codecs import DecodedImage
from imaging.edits import Edits, apply_edits
from imaging.pipeline import (
    TemplateMask,
    TemplateSpec,
    classify_filename,
    generate_for_image,
    render_variants,
    segment_templates,
    template_applies,
)
from imaging.points import Point
from imaging.segmenter import Embedding, MaskCandidate


class DiscSegmenter:
    """Predicts discs around the first positive point (radii 10, 30, 20) with scores given out of order,
    and records the pixel prompts it receives."""

    backend = "fake"
    fingerprint = "disc"
    model_type = None
    device = "cpu"
    cacheable = False

    def __init__(self) -> None:
        self.encode_calls = 0
        self.prompts: list[tuple[np.ndarray, np.ndarray]] = []

    def encode(self, rgb: np.ndarray) -> Embedding:
        self.encode_calls += 1
        h, w = rgb.shape[:2]
        return Embedding(np.zeros(1, np.float16), (h, w), (h, w), self.fingerprint)

    def predict(self, embedding, point_coords, point_labels, *, multimask=True):
        self.prompts.append((np.asarray(point_coords), np.asarray(point_labels)))
        h, w = embedding.original_size
        x, y = point_coords[int(np.argmax(point_labels))]
        yy, xx = np.mgrid[:h, :w]
        out = []
        for radius, score in ((10, 0.5), (30, 0.9), (20, 0.7)):
            out.append(MaskCandidate((xx - x) ** 2 + (yy - y) ** 2 <= radius**2, score))
        return out  # deliberately not sorted


@pytest.fixture
def image(astronaut) -> DecodedImage:
    return DecodedImage(rgb=astronaut, is_grayscale=False, format="PNG")


def spec(
    tid: str, x: float, y: float, edits: Edits, *, order: int = 0, image_class: str = ""
) -> TemplateSpec:
    return TemplateSpec(
        id=tid, name=f"T{tid}", points=(Point(x, y),), image_class=image_class, edits=edits, order=order
    )


def test_classify_filename():
    assert classify_filename("IMG_PASS_01.png") == "pass"
    assert classify_filename("part-fail-3.bmp") == "fail"
    assert classify_filename("passed_then_failed.jpg") == "pass"  # "pass" wins
    assert classify_filename("board_17.tif") == ""


@pytest.mark.parametrize(
    "template_class,image_class,expected",
    [
        ("", "", True),
        ("", "pass", True),
        ("", "fail", True),
        ("pass", "pass", True),
        ("pass", "", True),
        ("pass", "fail", False),
        ("fail", "pass", False),
        ("fail", "fail", True),
    ],
)
def test_template_applies(template_class, image_class, expected):
    assert template_applies(template_class, image_class) is expected


def test_segment_templates_picks_best_score_and_denormalises():
    seg = DiscSegmenter()
    emb = seg.encode(np.zeros((101, 201, 3), np.uint8))
    masks = segment_templates(seg, emb, [spec("a", 0.5, 1.0, Edits())], width=201, height=101)
    assert len(masks) == 1 and masks[0].template_id == "a" and masks[0].score == 0.9
    assert masks[0].mask.sum() == MaskCandidate(masks[0].mask, 0).area and masks[0].mask[100, 100]
    coords, labels = seg.prompts[0]
    assert coords.tolist() == [[100.0, 100.0]] and labels.tolist() == [1]
    with pytest.raises(ValueError, match="no points"):
        segment_templates(seg, emb, [TemplateSpec("b", "B", ())], width=201, height=101)


def test_each_gives_one_variant_per_template_from_the_original(image):
    seg = DiscSegmenter()
    emb = seg.encode(image.rgb)
    templates = [spec("a", 0.3, 0.3, Edits(brightness=0.3)), spec("b", 0.7, 0.7, Edits(hue=90))]
    variants = generate_for_image(image, emb, seg, templates, image_class="", compose="each")
    assert [v.template_ids for v in variants] == [("a",), ("b",)]
    masks = segment_templates(seg, emb, templates, width=512, height=512)
    for variant, template, tm in zip(variants, templates, masks, strict=True):
        expected = apply_edits(image.rgb, tm.mask, template.edits, is_grayscale=False, component_id=1)
        assert np.array_equal(variant.rgb, expected)
        assert np.array_equal(variant.mask, tm.mask)
        assert variant.area == int(tm.mask.sum()) and variant.score == tm.score
        assert variant.template_names == (template.name,)


def test_stack_applies_in_order_each_in_its_own_mask(image):
    seg = DiscSegmenter()
    emb = seg.encode(image.rgb)
    # Given out of order: "late" has order 2 but comes first in the list.
    late = spec("late", 0.45, 0.5, Edits(contrast=0.8), order=2)
    early = spec("early", 0.55, 0.5, Edits(brightness=0.4), order=1)
    far = spec("far", 0.1, 0.1, Edits(noise=0.1), order=3)
    variants = generate_for_image(image, emb, seg, [late, early, far], image_class="", compose="stack")
    assert len(variants) == 1
    variant = variants[0]
    assert variant.template_ids == ("early", "late", "far")
    masks = {m.template_id: m for m in segment_templates(seg, emb, [late, early, far], width=512, height=512)}
    expected = image.rgb
    for t in (early, late, far):
        expected = apply_edits(expected, masks[t.id].mask, t.edits, is_grayscale=False, component_id=1)
    assert np.array_equal(variant.rgb, expected)
    # Brightness then contrast differs from contrast then brightness where the masks overlap.
    wrong = image.rgb
    for t in (late, early, far):
        wrong = apply_edits(wrong, masks[t.id].mask, t.edits, is_grayscale=False, component_id=1)
    assert not np.array_equal(variant.rgb, wrong)
    union = masks["early"].mask | masks["late"].mask | masks["far"].mask
    assert np.array_equal(variant.mask, union) and variant.area == int(union.sum())
    assert variant.score == pytest.approx(0.9)
    # Noise uses component id 1.
    other_id = image.rgb
    for t in (early, late):
        other_id = apply_edits(other_id, masks[t.id].mask, t.edits, is_grayscale=False, component_id=1)
    other_id = apply_edits(other_id, masks["far"].mask, far.edits, is_grayscale=False, component_id=2)
    assert not np.array_equal(variant.rgb, other_id)


def test_stack_opacity_blends_against_the_image_before_that_template():
    rgb = np.full((20, 20, 3), 100, np.uint8)
    image = DecodedImage(rgb=rgb, is_grayscale=True, format="PNG")
    mask = np.ones((20, 20), bool)
    first = spec("1", 0.5, 0.5, Edits(brightness=100 / 255), order=1)  # 100 -> 200
    second = spec("2", 0.5, 0.5, Edits(brightness=-1.0, opacity=0.25), order=2)  # 200 -> 0, blended 25%
    masks = [TemplateMask("1", mask, 0.8), TemplateMask("2", mask, 0.6)]
    (variant,) = render_variants(image, masks, [second, first], compose="stack")
    # Against the image before template 2 (200), not the original (100): 0.75 * 200 = 150.
    assert variant.rgb.shape == (20, 20)  # a grayscale source gives a one-channel variant
    assert int(variant.rgb[0, 0]) == 150
    assert variant.score == pytest.approx(0.7)


def test_class_filter(image):
    seg = DiscSegmenter()
    emb = seg.encode(image.rgb)
    templates = [
        spec("p", 0.3, 0.3, Edits(brightness=0.2), image_class="pass"),
        spec("f", 0.6, 0.6, Edits(brightness=-0.2), image_class="fail"),
        spec("any", 0.5, 0.5, Edits(gamma=0.5)),
    ]
    on_fail = generate_for_image(image, emb, seg, templates, image_class="fail", compose="each")
    assert [v.template_ids for v in on_fail] == [("f",), ("any",)]
    unclassed = generate_for_image(image, emb, seg, templates, image_class="", compose="stack")
    assert unclassed[0].template_ids == ("p", "f", "any")
    only_pass = [templates[0]]
    assert generate_for_image(image, emb, seg, only_pass, image_class="fail", compose="stack") == []
    assert generate_for_image(image, emb, seg, only_pass, image_class="fail", compose="each") == []


def test_render_validates(image):
    with pytest.raises(ValueError):
        render_variants(image, [], [], compose="mosaic")
    bad = [TemplateMask("a", np.ones((3, 3), bool), 1.0)]
    with pytest.raises(ValueError):
        render_variants(image, bad, [spec("a", 0.5, 0.5, Edits())])
    assert render_variants(image, [], [spec("a", 0.5, 0.5, Edits())]) == []


def test_embedding_must_match_image(image):
    seg = DiscSegmenter()
    emb = seg.encode(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="different size"):
        generate_for_image(image, emb, seg, [spec("a", 0.5, 0.5, Edits())], image_class="")


def test_with_the_classical_segmenter_on_a_photo(image):
    seg = ClassicalSegmenter()
    emb = seg.encode(image.rgb)
    suit = TemplateSpec(
        id="suit",
        name="Suit",
        points=(Point(100 / 511, 330 / 511), Point(480 / 511, 60 / 511, positive=False)),
        edits=Edits(hue=-60, saturation=0.5),
    )
    (variant,) = generate_for_image(image, emb, seg, [suit], image_class="", compose="stack")
    assert variant.mask[330, 100] and not variant.mask[60, 480]
    assert not np.array_equal(variant.rgb[variant.mask], image.rgb[variant.mask])
    assert np.array_equal(variant.rgb[~variant.mask], image.rgb[~variant.mask])
