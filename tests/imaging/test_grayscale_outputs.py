"""Grayscale in, grayscale out: a one-channel source gives one-channel variants in every format that has one.

A grayscale PNG variant written as RGB is ~3x larger and hands a CV pipeline a different channel count than it
was given (issue 16). PNG and JPEG have a one-channel layout; WebP has none, so its chroma is flat.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imaging.codecs import decode_image, encode_image
from imaging.edits import Edits
from imaging.pipeline import TemplateMask, TemplateSpec, render_variants
from imaging.points import Point
from tests.fixtures.images import image_bytes


@pytest.fixture(scope="module")
def gray_upload() -> bytes:
    from skimage import data

    return image_bytes(data.camera())  # mode "L", 512x512


def _templates():
    point = (Point(0.5, 0.5, True),)
    return [
        TemplateSpec(id="a", name="A", points=point, edits=Edits(brightness=0.2, noise=0.05), order=0),
        TemplateSpec(
            id="b", name="B", points=point, edits=Edits(contrast=0.3, hue=90, saturation=1), order=1
        ),
    ]


@pytest.mark.parametrize("compose", ["stack", "each"])
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_a_grayscale_upload_gives_single_channel_variants(gray_upload, compose, fmt):
    image = decode_image(gray_upload)
    assert image.is_grayscale
    mask = np.zeros((image.height, image.width), bool)
    mask[100:300, 150:400] = True
    masks = [TemplateMask("a", mask, 0.9), TemplateMask("b", mask, 0.8)]
    variants = render_variants(image, masks, _templates(), compose=compose)
    assert len(variants) == (1 if compose == "stack" else 2)
    for variant in variants:
        assert variant.rgb.shape == (image.height, image.width)  # one channel, end to end
        assert not np.array_equal(variant.rgb[mask], image.rgb[..., 0][mask])  # the edits did apply
        assert np.array_equal(variant.rgb[~mask], image.rgb[..., 0][~mask])  # and only inside the mask
        data = encode_image(variant.rgb, fmt)
        decoded = Image.open(io.BytesIO(data))
        if fmt in ("png", "jpeg"):
            assert decoded.mode == "L", f"{fmt} variant of a grayscale image is {decoded.mode}"
        else:
            # No one-channel WebP exists: flat chroma, so the channels agree to the YUV rounding (1 level).
            assert decoded.format == "WEBP"
            rgb = np.asarray(decoded.convert("RGB")).astype(np.int16)
            assert (
                np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 1 and np.abs(rgb[..., 1] - rgb[..., 2]).max() <= 1
            )
        if fmt == "png":
            assert np.array_equal(np.asarray(decoded), variant.rgb)  # lossless, byte for byte


def test_grayscale_png_variant_is_much_smaller_than_its_rgb_encoding(gray_upload):
    image = decode_image(gray_upload)
    mask = np.ones((image.height, image.width), bool)
    (variant,) = render_variants(image, [TemplateMask("a", mask, 1.0)], _templates()[:1], compose="stack")
    data = encode_image(variant.rgb, "png")
    with Image.open(io.BytesIO(data)) as written:
        assert written.mode == "L"  # one channel on disk, not three equal ones
    triple = len(encode_image(np.repeat(variant.rgb[:, :, None], 3, axis=2), "png"))
    assert len(data) < 0.6 * triple


def test_colour_images_keep_three_channels(astronaut):
    from imaging.codecs import DecodedImage

    image = DecodedImage(rgb=astronaut, is_grayscale=False, format="PNG")
    mask = np.zeros(astronaut.shape[:2], bool)
    mask[10:50, 10:50] = True
    (variant,) = render_variants(image, [TemplateMask("a", mask, 1.0)], _templates()[:1], compose="stack")
    assert variant.rgb.shape == astronaut.shape
    assert Image.open(io.BytesIO(encode_image(variant.rgb, "jpeg"))).mode == "RGB"
