"""The classical (GrabCut) segmenter on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imaging.classical import FINGERPRINT, WORK_SIDE, ClassicalSegmenter
from imaging.segmenter import Segmenter


@pytest.fixture(scope="module")
def segmenter() -> ClassicalSegmenter:
    return ClassicalSegmenter()


def upscale(image: np.ndarray, factor: int = 2) -> np.ndarray:
    """A larger copy, so the tests also cover the downscale/upsample round trip (1024 px and more)."""
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)


def disc(shape: tuple[int, int], x: int, y: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - x) ** 2 + (yy - y) ** 2 <= r * r


@pytest.mark.parametrize(
    "photo,positive,negative",
    [
        ("astronaut", (100, 330), (480, 60)),  # the orange suit vs the grey backdrop
        ("astronaut", (225, 110), (100, 330)),  # the face vs the suit
        ("astronaut", (410, 150), (225, 110)),  # the model rocket vs the face
        ("coffee", (280, 150), (550, 50)),  # the crema vs the table
    ],
)
def test_positive_point_object_is_segmented_and_negative_region_excluded(
    segmenter, photo, positive, negative, astronaut, coffee
):
    image = upscale(astronaut if photo == "astronaut" else coffee)
    px, py = positive[0] * 2, positive[1] * 2
    nx, ny = negative[0] * 2, negative[1] * 2
    embedding = segmenter.encode(image)
    candidates = segmenter.predict(embedding, np.array([[px, py], [nx, ny]]), np.array([1, 0]))
    assert len(candidates) == 3
    h, w = image.shape[:2]
    for candidate in candidates:
        assert candidate.mask.shape == (h, w) and candidate.mask.dtype == np.bool_
        assert 0.0 <= candidate.score < 1.0
        assert candidate.mask[py, px]
        # The negative point's neighbourhood is excluded, not just its pixel.
        assert not candidate.mask[disc((h, w), nx, ny, 12)].any()
        assert 0 < candidate.area < 0.6 * h * w
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)


def test_suit_mask_covers_the_suit_not_the_background(segmenter, astronaut):
    embedding = segmenter.encode(astronaut)
    best = segmenter.predict(embedding, np.array([[100, 330], [480, 60]]), np.array([1, 0]))[0]
    # Suit pixels: orange (R high, B low); the best mask should be mostly suit and cover much of it.
    r, g, b = (astronaut[..., i].astype(int) for i in range(3))
    suit = (r > 150) & (b < 100) & (r - g > 60)
    suit[:200] = False
    precision = (best.mask & suit).sum() / best.mask.sum()
    recall = (best.mask & suit).sum() / suit.sum()
    assert precision > 0.6 and recall > 0.3


def test_deterministic(astronaut):
    prompt = (np.array([[200, 300], [480, 60], [30, 200]]), np.array([1, 0, 0]))
    a = ClassicalSegmenter()
    b = ClassicalSegmenter()
    first = a.predict(a.encode(astronaut), *prompt)
    again = a.predict(a.encode(astronaut), *prompt)
    other = b.predict(b.encode(astronaut), *prompt)
    for x, y, z in zip(first, again, other, strict=True):
        assert np.array_equal(x.mask, y.mask) and np.array_equal(x.mask, z.mask)
        assert x.score == y.score == z.score


def test_interface_and_encode(segmenter, coffee):
    assert isinstance(segmenter, Segmenter)
    assert segmenter.backend == "classical" and segmenter.cacheable is False
    assert segmenter.fingerprint == FINGERPRINT and segmenter.model_type is None
    before = segmenter.encode_calls
    big = upscale(coffee)
    embedding = segmenter.encode(big)
    assert segmenter.encode_calls == before + 1
    assert embedding.original_size == (800, 1200)
    assert max(embedding.input_size) == WORK_SIDE
    assert embedding.features.shape == (*embedding.input_size, 3)
    small = coffee[:100, :150]
    assert segmenter.encode(small).input_size == (100, 150)  # never upscaled


def test_single_candidate_and_negatives_only(segmenter, coffee):
    embedding = segmenter.encode(coffee)
    single = segmenter.predict(embedding, np.array([[280, 150]]), np.array([1]), multimask=False)
    assert len(single) == 1 and single[0].mask[150, 280]
    negatives = segmenter.predict(embedding, np.array([[550, 50], [20, 380]]), np.array([0, 0]))
    for candidate in negatives:
        assert not candidate.mask[50, 550] and not candidate.mask[380, 20]


def test_rejects_foreign_embedding(segmenter, coffee):
    embedding = segmenter.encode(coffee)
    from imaging.segmenter import Embedding

    foreign = Embedding(embedding.features, embedding.original_size, embedding.input_size, "sam-v1:x")
    with pytest.raises(ValueError):
        segmenter.predict(foreign, np.array([[1, 1]]), np.array([1]))
