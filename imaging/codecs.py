"""Image and mask codecs: decode uploads from bytes, encode variants, masks, thumbnails, base64, hashes.

Decoding goes through Pillow, restricted to the formats the product accepts, with the pixel limit checked on
the *header* before any pixel is decoded, so a decompression bomb never allocates its pixel buffer. Encoding
goes through OpenCV (JPEG, WebP, masks, thumbnails), which is several times faster than Pillow, except PNG
images, written here with numpy's row filter and ISA-L's deflate (faster again: see ``_encode_png``).

All pixel arrays here are RGB ``uint8`` ``HxWx3`` C-contiguous arrays unless stated otherwise; masks are
``bool`` ``HxW``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from isal import isal_zlib
from PIL import Image, ImageOps, UnidentifiedImageError

from imaging.errors import ImageDecodeError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

#: Output formats of :func:`encode_image` → file extension (without dot).
FORMAT_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
#: Output formats of :func:`encode_image` → HTTP content type.
FORMAT_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

DEFAULT_MAX_PIXELS = 100_000_000

#: The semantics of :func:`decode_image`'s output for given bytes (orientation, mode conversion, the 16-bit
#: reduction, the grayscale test). Bump it with any change to them: stored decodes
#: (``imaging.decoded_cache``) are keyed by it, together with Pillow's version, so none goes stale.
DECODER_VERSION = 1

# Pillow plugins we accept. Restricting ``Image.open`` to these keeps rarely exercised decoders (and their
# attack surface) out of the upload path. (The JPEG plugin also opens multi-picture JPEGs, reported as "MPO".)
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
_BOMB_PIXELS_RE = re.compile(r"\((\d+) pixels\)")

# We enforce our own pixel limit (checked on the header, before decoding), so Pillow's own
# DecompressionBombWarning (issued from ~89 MP, below our 100 MP default) is noise. The warnings module is
# not thread-safe to toggle per call (catch_warnings mutates global state), hence one filter at import.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# PNG images (variants) are written by :func:`_encode_png`: the AVG row filter computed with numpy and ISA-L's
# deflate at level 1 (``isal``). Measured on a 2048x1536 photo: 38 ms and 3.17 MB, against 86 ms and 3.18 MB
# for OpenCV's libpng with zlib level 1, AVG filter and RLE strategy (the previous settings, themselves ~35%
# faster than OpenCV's default filter selection) and 188 ms for Pillow's level 1. PNG is lossless whatever
# the encoder, so this only changes speed and size.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_FILTER_AVG = 3
_PNG_DEFLATE_LEVEL = 1
_PNG_FILTER_NONE = 0
# Thumbnails are tiny, so spending more zlib effort on them costs nothing noticeable.
_THUMB_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 6]


def is_image_filename(name: str) -> bool:
    """True when ``name`` ends with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data`` (the content hash used by the embedding cache and duplicate detection)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class DecodedImage:
    """A decoded upload.

    ``rgb`` is ``HxWx3`` ``uint8`` C-contiguous with EXIF orientation applied. ``is_grayscale`` is True when
    the source was a grayscale mode (L, LA, I;16, 1, ...) or every pixel has R == G == B. ``format`` is
    Pillow's format name ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF").
    """

    rgb: np.ndarray
    is_grayscale: bool
    format: str

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def _limit_text(max_pixels: int) -> str:
    mp = max_pixels / 1e6
    return f"{mp:g} MP"


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open ``data`` lazily (header only) and enforce the size limits before any pixel is decoded."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageDecodeError("not an image (no bytes)")
    if len(data) == 0:
        raise ImageDecodeError("not an image (empty file)")
    try:
        im = Image.open(io.BytesIO(bytes(data)), formats=_PIL_FORMATS)
    except Image.DecompressionBombError as exc:
        # Pillow refuses > 2x its own limit at open time; report it in our terms.
        match = _BOMB_PIXELS_RE.search(str(exc))
        size = _megapixels(int(match.group(1))) if match else "too many pixels"
        raise ImageDecodeError(f"image too large: {size} > {_limit_text(max_pixels)} limit") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised or unsupported format)") from None
    except (EOFError, OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageDecodeError(_decode_failure_message(exc)) from None
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("image has zero size")
    check_pixel_limit(width, height, max_pixels)
    return im


def check_pixel_limit(width: int, height: int, max_pixels: int) -> None:
    """Raise :class:`ImageDecodeError` ("image too large: ...") when ``width * height`` exceeds ``max_pixels``:
    the one wording of the limit, for a header being decoded and for pixels decoded earlier alike."""
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image too large: {_megapixels(width * height)} > {_limit_text(max_pixels)} limit"
        )


def _decode_failure_message(exc: BaseException) -> str:
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncat" in text or "eof" in text or "end of file" in text:
        return "truncated image"
    return "corrupt or unsupported image data"


def _to_rgb_uint8(im: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an ``HxWx3`` ``uint8`` array.

    16-bit samples (``I;16*`` modes) are reduced to 8 bits by keeping the high byte (``v >> 8``). This is
    exactly what Pillow itself does when it opens 16-bit RGB TIFF/PNG files as ``RGB``, so 16-bit grayscale
    and 16-bit colour sources are treated alike; it differs from the exact rescale ``round(v * 255 / 65535)``
    by at most one grey level. 32-bit ``I`` and float ``F`` images are rare; they are mapped best-effort
    (values already in 0..255 kept, 0..65535 shifted by 8 bits, larger ranges scaled by their maximum;
    floats in 0..1 scaled by 255).
    """
    mode = im.mode
    if mode.startswith("I;16"):
        arr = np.asarray(im)
        gray = (arr.astype(np.uint16, copy=False) >> 8).astype(np.uint8)
    elif mode == "I":
        arr = np.asarray(im).astype(np.int64)
        arr = np.clip(arr, 0, None)
        peak = int(arr.max()) if arr.size else 0
        if peak <= 255:
            gray = arr.astype(np.uint8)
        elif peak <= 65535:
            gray = (arr >> 8).astype(np.uint8)
        else:
            gray = np.floor(arr * (255.0 / peak) + 0.5).astype(np.uint8)
    elif mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(arr.max()) if arr.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        gray = np.clip(np.floor(arr * scale + 0.5), 0, 255).astype(np.uint8)
    else:
        rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"))
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _channels_equal(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2]))


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode an uploaded image.

    Accepts PNG, JPEG, BMP (including 8-bit grayscale and palette BMPs), TIFF (8 and 16 bit; see
    :func:`_to_rgb_uint8` for the 16-bit reduction), WebP and GIF (first frame). EXIF orientation is applied.
    Alpha is dropped (the stored colour under transparent pixels is kept as is), palette images are expanded.

    Raises :class:`ImageDecodeError` with a human message for anything else: not an image, unsupported format,
    truncated data (the whole image is decoded, so truncation is always detected), more than ``max_pixels``
    pixels (checked from the header before decoding), zero size.
    """
    im = _open_checked(data, max_pixels)
    fmt = "JPEG" if im.format == "MPO" else str(im.format)
    try:
        # Image.open leaves animations and multi-page files on their first frame; load() decodes only it,
        # and decodes all of it, so truncated data is always detected here.
        im.load()
    except Image.DecompressionBombError:
        raise ImageDecodeError(f"image too large: > {_limit_text(max_pixels)} limit") from None
    except (EOFError, OSError, SyntaxError, ValueError, MemoryError, struct.error) as exc:
        raise ImageDecodeError(_decode_failure_message(exc)) from None
    source_gray = im.mode in _GRAYSCALE_MODES
    try:
        oriented = ImageOps.exif_transpose(im)
    except Exception:
        # A broken EXIF block must not make a decodable image unusable: keep the stored orientation.
        oriented = im
    if oriented is None:  # older Pillow returns None for in-place transposes
        oriented = im
    try:
        rgb = _to_rgb_uint8(oriented)
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(_decode_failure_message(exc)) from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageDecodeError("corrupt or unsupported image data")
    is_gray = source_gray or _channels_equal(rgb)
    return DecodedImage(rgb=rgb, is_grayscale=is_gray, format=fmt)


def _normalise_format(fmt: str) -> str:
    key = fmt.lower().lstrip(".")
    if key == "jpg":
        key = "jpeg"
    if key not in FORMAT_EXTENSIONS:
        raise ValueError(f"unsupported output format {fmt!r}; expected png, jpeg or webp")
    return key


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise ValueError("expected a uint8 numpy array")
    if rgb.ndim == 2:
        return rgb
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB array, got shape {rgb.shape}")
    return rgb


def encode_image(rgb: np.ndarray, fmt: str = "png", *, quality: int = 92) -> bytes:
    """Encode an RGB ``uint8`` image as ``png``, ``jpeg`` (alias ``jpg``) or ``webp``.

    PNG is lossless (decodes back byte-identical) with a fast zlib level; ``quality`` (1..100) applies to JPEG
    and WebP. A 2-D array (a grayscale image) is written as a single-channel PNG or JPEG; WebP has no
    one-channel layout, so it is written with three equal channels (its chroma planes are flat and cost
    next to nothing).
    """
    key = _normalise_format(fmt)
    arr = _check_rgb(rgb)
    if key == "png":
        return _encode_png(np.ascontiguousarray(arr))
    bgr = arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    q = int(min(100, max(1, quality)))
    if key == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
    else:
        ok, buf = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, q])
    if not ok:
        raise ValueError(f"OpenCV failed to encode a {key} image of shape {arr.shape}")
    return buf.tobytes()


def _png_chunk(kind: bytes, payload) -> list:
    """The parts of one PNG chunk (joined once by the caller: a multi-megabyte IDAT is never copied twice)."""
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return [struct.pack(">I", len(payload)), kind, payload, struct.pack(">I", crc)]


def _encode_png(pixels: np.ndarray) -> bytes:
    """A PNG of ``pixels`` (``HxWx3`` RGB or ``HxW`` grayscale, 8-bit, C-contiguous): every row AVG-filtered,
    one zlib stream (ISA-L level 1) in one IDAT chunk."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    raw = pixels.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = _PNG_FILTER_AVG
    # AVG filter: each byte minus floor((left + up) / 2), left and up being 0 outside the image, modulo 256.
    # floor((a + b) / 2) == (a & b) + ((a ^ b) >> 1) exactly, so it is computed in uint8 without widening. The
    # predictions are written into the output rows, then subtracted in place.
    pred = filtered[:, 1:]
    left, up = raw[1:, :-channels], raw[:-1, channels:]
    body = pred[1:, channels:]
    np.bitwise_and(left, up, out=body)
    half = np.bitwise_xor(left, up)
    np.right_shift(half, 1, out=half)
    np.add(body, half, out=body)
    del half
    np.right_shift(raw[0, :-channels], 1, out=pred[0, channels:])  # first row: up is 0
    np.right_shift(raw[:-1, :channels], 1, out=pred[1:, :channels])  # first pixel of a row: left is 0
    pred[0, :channels] = 0
    np.subtract(raw, pred, out=pred)
    return _png_file(width, height, channels, filtered)


def _png_file(width: int, height: int, channels: int, filtered: np.ndarray) -> bytes:
    """The PNG file of 8-bit rows already prefixed with their filter byte (one ISA-L level 1 IDAT)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return b"".join(
        [
            _PNG_SIGNATURE,
            *_png_chunk(b"IHDR", header),
            *_png_chunk(b"IDAT", isal_zlib.compress(filtered.data, _PNG_DEFLATE_LEVEL)),
            *_png_chunk(b"IEND", b""),
        ]
    )


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encode a mask (bool, or uint8 where any non-zero is foreground) as a single-channel 0/255 PNG."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {m.shape}")
    height, width = m.shape
    # Two-valued rows need no filter: ISA-L level 1 writes a 3-megapixel mask in 0.7 ms, 16.6 KB, against
    # 8.5 ms and 11.2 KB through OpenCV's libpng (no filter, zlib level 1, RLE); previews send three a click.
    # The 0/255 samples are written straight into the filtered rows.
    rows = np.empty((height, width + 1), dtype=np.uint8)
    rows[:, 0] = _PNG_FILTER_NONE
    np.multiply(m if m.dtype == np.bool_ else m != 0, 255, out=rows[:, 1:], dtype=np.uint8)
    return _png_file(width, height, 1, rows)


def decode_mask_png(
    data: bytes,
    *,
    expected_size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode a mask image to a ``bool`` ``HxW`` array.

    Any non-zero sample is foreground; for images with an alpha channel a pixel is foreground when any colour
    channel is non-zero and it is not fully transparent. ``expected_size`` is ``(width, height)``; a mismatch
    raises :class:`ImageDecodeError`, as does anything undecodable.
    """
    im = _open_checked(data, max_pixels)
    # The header's size is checked before any pixel is decoded: a wrong-size mask costs nothing.
    if expected_size is not None and tuple(im.size) != tuple(expected_size):
        raise ImageDecodeError(
            f"mask size {im.size[0]}x{im.size[1]} does not match the image size "
            f"{expected_size[0]}x{expected_size[1]}"
        )
    try:
        im.load()
    except (EOFError, OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageDecodeError(_decode_failure_message(exc)) from None
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    arr = np.asarray(im)
    if arr.ndim == 2:
        return np.ascontiguousarray(arr != 0)
    if im.mode in ("LA", "La", "RGBA", "RGBa"):
        colour, alpha = arr[:, :, :-1], arr[:, :, -1]
        return np.ascontiguousarray(np.any(colour != 0, axis=2) & (alpha != 0))
    return np.ascontiguousarray(np.any(arr != 0, axis=2))


def make_thumbnail(rgb: np.ndarray, max_side: int = 160) -> np.ndarray:
    """Downscale so the longest side is ``max_side`` (area interpolation); never upscales (returns a copy)."""
    arr = _check_rgb(rgb)
    h, w = arr.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return arr.copy()
    scale = max_side / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)


def encode_thumbnail_png(rgb: np.ndarray, max_side: int = 160) -> bytes:
    """:func:`make_thumbnail` then PNG-encode it."""
    thumb = make_thumbnail(rgb, max_side)
    bgr = thumb if thumb.ndim == 2 else cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", bgr, _THUMB_PNG_PARAMS)
    if not ok:
        raise ValueError("OpenCV failed to encode the thumbnail")
    return buf.tobytes()


def b64encode(data: bytes) -> str:
    """Standard base64 text of ``data`` (no ``data:`` prefix, no line breaks)."""
    return base64.b64encode(data).decode("ascii")


_DATA_URL_RE = re.compile(r"^data:[^,]*?;base64,", re.IGNORECASE)
_WHITESPACE_RE = re.compile(r"\s+")


def b64decode(text: str) -> bytes:
    """Decode base64 text, tolerating a ``data:<type>;base64,`` prefix, whitespace and missing padding.

    Raises ``ImageDecodeError("invalid base64")`` on anything else (including non-alphabet characters).
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise ImageDecodeError("invalid base64") from None
    if not isinstance(text, str):
        raise ImageDecodeError("invalid base64")
    body = _WHITESPACE_RE.sub("", text)
    body = _DATA_URL_RE.sub("", body, count=1)
    if not body:
        raise ImageDecodeError("invalid base64")
    body += "=" * (-len(body) % 4)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError("invalid base64") from None
