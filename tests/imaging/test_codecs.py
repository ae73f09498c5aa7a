"""Decoding uploads, encoding variants/masks/thumbnails, base64 and hashes."""

from __future__ import annotations

import hashlib
import io
import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from imaging.codecs import (
    FORMAT_CONTENT_TYPES,
    FORMAT_EXTENSIONS,
    IMAGE_EXTENSIONS,
    b64decode,
    b64encode,
    decode_image,
    decode_mask_png,
    encode_image,
    encode_mask_png,
    encode_thumbnail_png,
    is_image_filename,
    make_thumbnail,
    sha256_hex,
)
from imaging.errors import ImageDecodeError, ImagingError
from tests.fixtures.images import image_bytes


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def fake_png(width: int, height: int) -> bytes:
    """A syntactically valid PNG whose header claims ``width`` x ``height`` but holds a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


# -- decoding ------------------------------------------------------------------------------------------------


def test_png_colour_decodes_exactly(astronaut):
    decoded = decode_image(image_bytes(Image.fromarray(astronaut), "PNG"))
    assert decoded.format == "PNG"
    assert (decoded.width, decoded.height) == (512, 512)
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.flags.c_contiguous
    assert np.array_equal(decoded.rgb, astronaut)
    assert decoded.is_grayscale is False


def test_jpeg_decodes_close_to_source(coffee):
    decoded = decode_image(image_bytes(Image.fromarray(coffee), "JPEG", quality=95))
    assert decoded.format == "JPEG"
    assert decoded.rgb.shape == coffee.shape
    assert np.abs(decoded.rgb.astype(int) - coffee).mean() < 3


def test_grayscale_l_png_is_grayscale(camera_rgb):
    decoded = decode_image(image_bytes(Image.fromarray(camera_rgb[:, :, 0]), "PNG"))
    assert decoded.is_grayscale is True
    assert np.array_equal(decoded.rgb, camera_rgb)


def test_rgb_file_with_equal_channels_counts_as_grayscale(camera_rgb):
    decoded = decode_image(image_bytes(Image.fromarray(camera_rgb), "PNG"))
    assert decoded.is_grayscale is True


def test_8bit_grayscale_bmp(camera_rgb):
    data = image_bytes(Image.fromarray(camera_rgb[:, :, 0]), "BMP")
    decoded = decode_image(data)
    assert decoded.format == "BMP"
    assert decoded.is_grayscale is True
    assert np.array_equal(decoded.rgb, camera_rgb)


def test_palette_bmp_expands_colours():
    indices = np.arange(64, dtype=np.uint8).reshape(8, 8) % 4
    image = Image.fromarray(indices, mode="P")
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30] + [0] * (256 * 3 - 12)
    image.putpalette(palette)
    decoded = decode_image(image_bytes(image, "BMP"))
    colours = np.array(palette[:12], dtype=np.uint8).reshape(4, 3)
    assert np.array_equal(decoded.rgb, colours[indices])
    assert decoded.is_grayscale is False


def test_16bit_grayscale_tiff_keeps_high_byte():
    values = np.array([[0, 255, 256, 4660], [32768, 65280, 65535, 1]], dtype=np.uint16)
    decoded = decode_image(image_bytes(Image.fromarray(values), "TIFF"))
    assert decoded.format == "TIFF"
    assert decoded.is_grayscale is True
    expected = (values >> 8).astype(np.uint8)
    assert np.array_equal(decoded.rgb[:, :, 0], expected)
    assert np.array_equal(decoded.rgb[:, :, 1], expected) and np.array_equal(decoded.rgb[:, :, 2], expected)


def test_16bit_rgb_tiff_keeps_high_byte():
    rgb16 = np.zeros((3, 4, 3), dtype=np.uint16)
    rgb16[..., 0] = 65535
    rgb16[..., 1] = 0x1234
    rgb16[..., 2] = 0x00FF
    ok, buf = cv2.imencode(".tiff", rgb16[:, :, ::-1].copy())
    assert ok
    decoded = decode_image(buf.tobytes())
    assert decoded.rgb[0, 0].tolist() == [255, 0x12, 0x00]


def test_gif_first_frame():
    red = Image.new("RGB", (10, 6), (255, 0, 0))
    blue = Image.new("RGB", (10, 6), (0, 0, 255))
    data = image_bytes(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    decoded = decode_image(data)
    assert decoded.format == "GIF"
    assert decoded.rgb.shape == (6, 10, 3)
    assert decoded.rgb[3, 5].tolist() == [255, 0, 0]


def test_webp_lossless_roundtrip(coffee):
    decoded = decode_image(image_bytes(Image.fromarray(coffee), "WEBP", lossless=True))
    assert decoded.format == "WEBP"
    assert np.array_equal(decoded.rgb, coffee)


def test_rgba_png_drops_alpha():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0
    decoded = decode_image(image_bytes(Image.fromarray(rgba, mode="RGBA"), "PNG"))
    assert decoded.rgb[0, 0].tolist() == [200, 0, 0]


def test_exif_orientation_is_applied():
    # 40 wide x 20 high, left half red, right half blue, stored with orientation 6 (rotate 90 clockwise).
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = image_bytes(Image.fromarray(array), "JPEG", quality=95, exif=exif.tobytes())
    decoded = decode_image(data)
    assert (decoded.width, decoded.height) == (20, 40)
    top, bottom = decoded.rgb[5, 10], decoded.rgb[35, 10]
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_rejected(astronaut, fmt):
    data = image_bytes(Image.fromarray(astronaut), fmt)
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) * 2 // 3])


@pytest.mark.parametrize(
    "data", [b"", b"hello, world", bytes(range(256)) * 10, b"\x89PNG\r\n\x1a\n" + b"\x00" * 30]
)
def test_garbage_is_rejected(data):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert isinstance(info.value, ImagingError)
    assert str(info.value)  # a human message


def test_unsupported_format_is_rejected():
    data = image_bytes(Image.new("RGB", (4, 4)), "PPM")
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(data)


def test_decompression_bomb_is_refused_without_allocating_its_pixels():
    data = fake_png(200_000, 200_000)
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match="too large"):
            decode_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 200000^2 RGB pixels would be 120 GB: a peak of a few MB proves the header alone was read.
    assert peak < 16 * 1024 * 1024


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_is_checked_on_the_header():
    # 12000 x 10000 = 120 MP: under Pillow's own hard limit, over ours.
    with pytest.raises(ImageDecodeError, match=r"image too large: 120\.0 MP > 100 MP limit"):
        decode_image(fake_png(12_000, 10_000))


def test_custom_pixel_limit(astronaut):
    data = image_bytes(Image.fromarray(astronaut), "PNG")
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(data, max_pixels=512 * 511)
    assert decode_image(data, max_pixels=512 * 512).width == 512


def test_zero_size_is_rejected():
    with pytest.raises(ImageDecodeError):
        decode_image(fake_png(0, 10))


# -- encoding ------------------------------------------------------------------------------------------------


def test_png_encode_roundtrips_byte_exact(astronaut):
    data = encode_image(astronaut, "png")
    assert data.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), astronaut)
    assert np.array_equal(decode_image(data).rgb, astronaut)


@pytest.mark.parametrize(
    "shape", [(1, 1, 3), (1, 9, 3), (7, 1, 3), (2, 2), (37, 53, 3), (64, 65), (301, 400, 3)]
)
def test_png_writer_is_lossless_for_every_size_and_both_layouts(shape):
    """The PNG writer filters rows itself (AVG, whose first row and first pixel have no neighbours): random
    bytes, the hardest case for a filter, decode back exactly with Pillow and with libpng (OpenCV)."""
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = encode_image(pixels, "png")
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == ("L" if pixels.ndim == 2 else "RGB")
        assert np.array_equal(np.asarray(im), pixels)
    via_libpng = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels.ndim == 3:
        via_libpng = via_libpng.reshape(shape)[:, :, ::-1]
    assert np.array_equal(via_libpng.reshape(shape), pixels)


@pytest.mark.parametrize("fmt,magic", [("jpeg", b"\xff\xd8"), ("jpg", b"\xff\xd8"), ("webp", b"RIFF")])
def test_lossy_encoders(coffee, fmt, magic):
    data = encode_image(coffee, fmt, quality=90)
    assert data.startswith(magic)
    back = decode_image(data).rgb
    assert back.shape == coffee.shape
    # Colours stay in place (would fail if RGB/BGR were swapped).
    assert np.abs(back.astype(int) - coffee).mean() < 4


def test_encode_rejects_unknown_format(coffee):
    with pytest.raises(ValueError):
        encode_image(coffee, "gif")


def test_format_tables():
    assert FORMAT_EXTENSIONS == {"png": "png", "jpeg": "jpg", "webp": "webp"}
    assert FORMAT_CONTENT_TYPES["jpeg"] == "image/jpeg" and FORMAT_CONTENT_TYPES["png"] == "image/png"


def test_mask_png_roundtrip_and_format():
    mask = np.zeros((30, 50), dtype=bool)
    mask[5:20, 10:40] = True
    data = encode_mask_png(mask)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "L"
        assert set(np.unique(np.asarray(im)).tolist()) == {0, 255}
    back = decode_mask_png(data, expected_size=(50, 30))
    assert back.dtype == np.bool_ and np.array_equal(back, mask)
    # 0/255 uint8 input encodes the same.
    assert np.array_equal(decode_mask_png(encode_mask_png(mask.astype(np.uint8) * 255)), mask)


def test_mask_png_any_nonzero_is_foreground():
    values = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    back = decode_mask_png(image_bytes(Image.fromarray(values), "PNG"))
    assert back.tolist() == [[False, True, True, True]]


def test_mask_png_size_mismatch_and_garbage():
    data = encode_mask_png(np.ones((10, 20), dtype=bool))
    with pytest.raises(ImageDecodeError, match="does not match"):
        decode_mask_png(data, expected_size=(10, 20))
    with pytest.raises(ImageDecodeError):
        decode_mask_png(b"not a png at all")


def test_thumbnail_never_upscales(coffee):
    thumb = make_thumbnail(coffee)
    assert thumb.shape == (107, 160, 3)
    small = coffee[:50, :80]
    assert make_thumbnail(small).shape == small.shape
    assert make_thumbnail(coffee, max_side=64).shape[1] == 64
    data = encode_thumbnail_png(coffee)
    assert decode_image(data).rgb.shape == (107, 160, 3)


def test_base64_roundtrip_and_prefix():
    payload = bytes(range(256))
    text = b64encode(payload)
    assert "data:" not in text and "\n" not in text
    assert b64decode(text) == payload
    assert b64decode("data:image/png;base64," + text) == payload
    wrapped = "\n".join(text[i : i + 60] for i in range(0, len(text), 60))
    assert b64decode("  data:image/png;base64,\n" + wrapped + "\n") == payload
    assert b64decode(text.rstrip("=")) == payload  # missing padding tolerated


@pytest.mark.parametrize(
    "text", ["", "!!!!", "abc$def", "data:image/png;base64,", "data:image/png;base64,@@"]
)
def test_base64_invalid(text):
    with pytest.raises(ImageDecodeError, match="invalid base64"):
        b64decode(text)


def test_sha256_and_filenames():
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert ".png" in IMAGE_EXTENSIONS
    assert (
        is_image_filename("a/b/IMG_001.JPG") and is_image_filename("x.tiff") and is_image_filename("x.webp")
    )
    assert not is_image_filename("notes.txt") and not is_image_filename("png") and not is_image_filename("x.")
