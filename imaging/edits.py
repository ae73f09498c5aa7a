"""Pixel edits inside a mask, exactly as ``shared/design/EDITS.md`` specifies.

Semantics (the contract every flow relies on):

* Work in float32 on [0, 1] (``x = uint8 / 255``), clip to [0, 1] after every step, convert back once at the
  end with rounding half up (``floor(255 * x + 0.5)``).
* Steps, in order, each skipped when neutral: brightness ``x + b``; contrast ``(x - 0.5) * (1 + c) + 0.5``;
  gamma ``x ** (1 / max(1e-3, 1 + g))``; hue rotation by ``hue`` degrees (wrapping) and saturation
  ``s * (1 + sat)`` in HSV (both skipped on a grayscale source); sharpen ``x + a * (x - G(x))`` with ``G`` a 2-D
  Gaussian blur, sigma 1 px (9x9 kernel, reflect-101 border at the image edges); noise; opacity
  ``o * edited + (1 - o) * before`` where ``before`` is the input image.
* Each step writes only inside the mask: pixels outside it keep their input value at every step, so the
  sharpen blur near the mask boundary sees the untouched neighbours. The output is byte-identical to the input
  outside the mask, and everywhere when the edit has no effect.
* Noise: ``rng = numpy.random.default_rng(seed)`` with ``seed = (area * (component_id + 13)) % (2**32 - 1)``,
  ``area`` the number of mask pixels; ``n = rng.standard_normal((area, C), dtype=float32) * float32(sigma)``
  where row ``i`` is the ``i``-th mask pixel in row-major order and ``C`` is 3 for colour sources, 1 for
  grayscale sources (the same value added to R, G and B, so grayscale stays grayscale).

Speed: the work is confined to the mask's bounding box (plus the blur radius when sharpening); brightness,
contrast and gamma are folded into one 256-entry float32 lookup table applied with ``cv2.LUT``; HSV and blur
use OpenCV on float32, in strips of rows that stay in the CPU's cache. When only per-value steps are active (tone and opacity), the whole edit collapses to a
single ``uint8 -> uint8`` table, which gives the same bytes as the general path. A grayscale source is
processed on one channel. The dominant cost of a full edit set is drawing the noise (numpy's float32 normal
sampler, ~10 ns per value here: ~9 ms for a quarter of a 1024x1024 colour image); see bench/imaging_bench.py.

Blank strings and ``None`` count as neutral in :meth:`Edits.from_dict` (an empty HTML form field).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np

from imaging.errors import EditValidationError
from imaging.parsing import parse_finite_number
from imaging.segmenter import check_rgb

EDIT_FIELDS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "gamma",
    "hue",
    "saturation",
    "sharpen",
    "noise",
    "opacity",
)

EDIT_RANGES: dict[str, tuple[float, float]] = {
    "brightness": (-1.0, 1.0),
    "contrast": (-1.0, 1.0),
    "gamma": (-0.9, 2.0),
    "hue": (-180.0, 180.0),
    "saturation": (-1.0, 3.0),
    "sharpen": (0.0, 2.0),
    "noise": (0.0, 0.2),
    "opacity": (0.0, 1.0),
}

#: The value of each field that means "no change".
NEUTRAL_VALUES: dict[str, float] = {name: (1.0 if name == "opacity" else 0.0) for name in EDIT_FIELDS}

# Gaussian for sharpen: sigma 1 px, kernel 9x9 (radius 4 = ceil(4 sigma), what OpenCV derives for sigma 1
# on float images and what scipy's default truncate=4 uses), so a margin of 4 px around the bounding box
# makes the box-local blur equal to a whole-image blur.
SHARPEN_SIGMA = 1.0
SHARPEN_KSIZE = 9
_SHARPEN_MARGIN = SHARPEN_KSIZE // 2

_NOISE_SEED_MOD = 2**32 - 1
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_IDENTITY_F32 = np.arange(256, dtype=np.float32) / np.float32(255.0)


def _parse_value(name: str, value: Any) -> float:
    """Validate one field; ``None`` and blank strings mean neutral (a blank HTML form field)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return NEUTRAL_VALUES[name]
    number = parse_finite_number(value, lambda message: EditValidationError(name, message))
    low, high = EDIT_RANGES[name]
    if not low <= number <= high:
        raise EditValidationError(name, f"must be between {low:g} and {high:g}, got {number:g}")
    return number


@dataclass(frozen=True)
class Edits:
    """A validated set of edit values (see the module docstring for their meaning).

    Construct from untrusted input with :meth:`from_dict`; direct construction validates too.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    sharpen: float = 0.0
    noise: float = 0.0
    opacity: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _parse_value(f.name, getattr(self, f.name)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, strict: bool = True) -> Edits:
        """Build from a mapping of field → value.

        ``None`` or missing keys → neutral; ``null`` values → neutral; numeric strings accepted; booleans,
        NaN, infinities, non-numbers and out-of-range values raise :class:`EditValidationError` naming the
        field. Unknown keys raise in strict mode (the typed API) and are ignored otherwise (the
        seed-compatible API).
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise EditValidationError("edits", "must be an object mapping field names to numbers")
        if strict:
            unknown = sorted(str(k) for k in data if k not in EDIT_RANGES)
            if unknown:
                raise EditValidationError(
                    unknown[0], f"unknown edit field; expected one of {', '.join(EDIT_FIELDS)}"
                )
        values = {name: _parse_value(name, data.get(name)) for name in EDIT_FIELDS}
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        """All eight fields, in :data:`EDIT_FIELDS` order, as floats."""
        return {name: float(getattr(self, name)) for name in EDIT_FIELDS}

    @property
    def is_neutral(self) -> bool:
        """True when every value is its neutral value (0, opacity 1)."""
        return all(getattr(self, name) == NEUTRAL_VALUES[name] for name in EDIT_FIELDS)

    def has_effect(self, *, is_grayscale: bool) -> bool:
        """False when applying these edits cannot change any pixel.

        That is the case when all values are neutral, when opacity is 0, or when only hue/saturation are set
        on a grayscale source (where they are skipped).
        """
        if self.opacity == 0.0:
            return False
        active = [name for name in EDIT_FIELDS[:-1] if getattr(self, name) != 0.0]
        if is_grayscale:
            active = [name for name in active if name not in ("hue", "saturation")]
        # Opacity alone blends the input with itself: no effect without another active step.
        return bool(active)


def tone_lut(edits: Edits) -> np.ndarray:
    """The float32 256-entry table of brightness → contrast → gamma (each clipped), indexed by uint8 value.

    Exact, since each of the three steps is a function of the pixel value alone.
    """
    x = _IDENTITY_F32.copy()
    if edits.brightness != 0.0:
        x = np.clip(x + np.float32(edits.brightness), _F0, _F1)
    if edits.contrast != 0.0:
        x = np.clip((x - np.float32(0.5)) * np.float32(1.0 + edits.contrast) + np.float32(0.5), _F0, _F1)
    if edits.gamma != 0.0:
        exponent = np.float32(1.0 / max(1e-3, 1.0 + edits.gamma))
        x = np.clip(np.power(x, exponent), _F0, _F1)
    return x.astype(np.float32, copy=False)


def noise_seed(area: int, component_id: int) -> int:
    """The noise seed of EDITS.md: ``(area * (component_id + 13)) mod (2**32 - 1)``."""
    return (int(area) * (int(component_id) + 13)) % _NOISE_SEED_MOD


def _finish(
    x: np.ndarray, before: np.ndarray | None, opacity: float, out: np.ndarray | None = None
) -> np.ndarray:
    """Opacity blend against ``before`` then round half up to uint8. ``x`` is consumed (modified in place).

    Shared by the table-only path (on 256-entry tables) and the general path (on pixels) so both give the same
    bytes: the same numpy float32 operations (exact IEEE, element by element) in the same order.
    """
    if opacity != 1.0:
        assert before is not None
        x *= np.float32(opacity)
        x += before * np.float32(1.0 - opacity)
    x *= np.float32(255.0)
    x += np.float32(0.5)
    # x is in [0.5, 255.5]: truncating a non-negative value is floor, so this rounds half up.
    if out is None:
        return x.astype(np.uint8)
    np.copyto(out, x, casting="unsafe")
    return out


_ONES = (1.0, 1.0, 1.0, 1.0)
_ZEROS = (0.0, 0.0, 0.0, 0.0)
_VOID12 = np.dtype((np.void, 12))
_VOID4 = np.dtype((np.void, 4))

# Per-thread scratch buffers. Fresh multi-megabyte arrays cost page faults on every call (measured: about
# as much as the arithmetic itself), so the float working images are reused between calls on the same
# thread. Buffers above the cap are allocated per call, bounding the memory kept per thread.
_SCRATCH = threading.local()
_SCRATCH_MAX_BYTES = 8 * 1024 * 1024


def _scratch(slot: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """An uninitialised array of ``shape`` backed by this thread's buffer ``slot`` (reused across calls).

    Callers must never let a scratch array escape :func:`apply_edits`.
    """
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dt.itemsize
    if nbytes > _SCRATCH_MAX_BYTES:
        return np.empty(shape, dt)
    pool: dict[str, np.ndarray] = _SCRATCH.__dict__
    buf = pool.get(slot)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(max(nbytes, 1 << 20), np.uint8)
        pool[slot] = buf
    return buf[:nbytes].view(dt).reshape(shape)


def _clip01(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] in place (OpenCV is ~3x faster than numpy's clip here; explicit per-channel scalars)."""
    cv2.min(x, _ONES, dst=x)
    cv2.max(x, _ZEROS, dst=x)
    return x


def _as_mask_u8(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The mask as a C-contiguous uint8 0/1 array (a view when it already is bool and contiguous)."""
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} does not match image shape {shape}")
    if m.dtype != np.bool_:
        m = m != 0
    return np.ascontiguousarray(m).view(np.uint8)


def _scatter_rows(values: np.ndarray, inside: np.ndarray, img: np.ndarray) -> np.ndarray:
    """Place row ``i`` of ``values`` (``N x C`` float32) at the ``i``-th True pixel of ``inside`` (row-major).

    ``img`` (``H x W x C`` float32) is zeroed first. Rows are moved as opaque 4*C-byte items, which is several
    times faster than numpy's per-element fancy assignment.
    """
    channels = values.shape[1]
    item = _VOID12 if channels == 3 else _VOID4
    img.fill(0.0)
    img.view(item)[:, :, 0][inside] = np.ascontiguousarray(values).view(item)[:, 0]
    return img


def apply_edits(
    rgb: np.ndarray,
    mask: np.ndarray,
    edits: Edits,
    *,
    is_grayscale: bool,
    component_id: int = 1,
) -> np.ndarray:
    """Apply ``edits`` inside ``mask`` and return a NEW ``uint8`` ``HxWx3`` array (the input is not modified).

    ``mask`` is ``HxW`` (bool, or any dtype where non-zero is inside). ``is_grayscale`` says whether the source
    image is grayscale (hue/saturation are then skipped and noise is identical on the three channels).
    ``component_id`` enters the noise seed. An empty mask or an edit without effect returns an unchanged copy.
    Thread-safe (scratch memory is per thread); deterministic.
    """
    check_rgb(rgb)
    rgb = np.ascontiguousarray(rgb)  # OpenCV needs contiguous rows; a no-op for ordinary images
    height, width = rgb.shape[:2]
    m8 = _as_mask_u8(mask, (height, width))
    out = rgb.copy()
    if not edits.has_effect(is_grayscale=is_grayscale):
        return out
    area = int(cv2.countNonZero(m8))
    if area == 0:
        return out
    bx, by, bw, bh = cv2.boundingRect(m8)
    box_out = out[by : by + bh, bx : bx + bw]
    box_mask = m8[by : by + bh, bx : bx + bw]
    do_hsv = not is_grayscale and (edits.hue != 0.0 or edits.saturation != 0.0)
    do_sharpen = edits.sharpen != 0.0
    do_noise = edits.noise != 0.0
    lut = tone_lut(edits)

    if not (do_hsv or do_sharpen or do_noise):
        # Only per-value steps: fold tone, opacity and rounding into one uint8 table.
        table = _finish(lut.copy(), _IDENTITY_F32, edits.opacity)
        cv2.copyTo(cv2.LUT(box_out, table), box_mask, box_out)
        return out

    # Region processed: the bounding box, grown by the blur radius when sharpening (clipped to the image).
    margin = _SHARPEN_MARGIN if do_sharpen else 0
    rx0, ry0 = max(0, bx - margin), max(0, by - margin)
    rx1, ry1 = min(width, bx + bw + margin), min(height, by + bh + margin)
    filled = area == bw * bh and (rx1 - rx0, ry1 - ry0) == (bw, bh)  # the region is all mask
    # A grayscale source (R == G == B) is processed on one channel: every step acts on the channels
    # independently and identically (no HSV, same noise on all three), so the bytes are the same, 3x cheaper.
    single = is_grayscale and _channels_equal(rgb[ry0:ry1, rx0:rx1])
    steps = _RowSteps(
        rgb=rgb,
        m8=m8,
        out=out,
        edits=edits,
        lut=lut,
        columns=(rx0, rx1, bx, bw),
        rows=(ry0, ry1),
        margin=margin,
        single=single,
        filled=filled,
        do_hsv=do_hsv,
        rng=np.random.default_rng(noise_seed(area, component_id)) if do_noise else None,
        noise_channels=1 if is_grayscale else 3,
    )
    # Strips of rows small enough to stay in the CPU's cache (and in the reused scratch buffers): every step
    # is per pixel except the blur, which gets its margin of rows above and below each strip, so each kept
    # pixel sees the same neighbours as in one pass over the region; the noise is drawn strip after strip
    # from one generator, which continues the same sequence.
    channels = 1 if single else 3
    rows_per_strip = max(16, _STRIP_BYTES // (4 * channels * (rx1 - rx0)))
    count = max(1, -(-bh // rows_per_strip))
    bounds = [by + bh * i // count for i in range(count + 1)]
    for top, bottom in itertools.pairwise(bounds):
        steps.run(top, bottom)
    return out


#: Target size of one float32 strip of the working image (see :func:`apply_edits`): 2 MB measured fastest
#: at 2048x1536 (1 and 4 MB within 10%), against 37 MB whole-frame buffers that miss the cache and fault in
#: fresh pages on every call.
_STRIP_BYTES = 2 * 1024 * 1024


@dataclass
class _RowSteps:
    """The general path of :func:`apply_edits`, run over rows ``top..bottom`` of the mask's bounding box.

    ``columns`` = (region x0, region x1, box x0, box width); ``rows`` = the region's (y0, y1): the box grown by
    ``margin`` (the blur radius, when sharpening) and clipped to the image."""

    rgb: np.ndarray
    m8: np.ndarray
    out: np.ndarray
    edits: Edits
    lut: np.ndarray
    columns: tuple[int, int, int, int]
    rows: tuple[int, int]
    margin: int
    single: bool
    filled: bool
    do_hsv: bool
    rng: np.random.Generator | None
    noise_channels: int

    def run(self, top: int, bottom: int) -> None:
        edits = self.edits
        rx0, rx1, bx, bw = self.columns
        # The rows this strip reads: its own plus the blur's margin, within the region.
        y0, y1 = max(self.rows[0], top - self.margin), min(self.rows[1], bottom + self.margin)
        src = self.rgb[y0:y1, rx0:rx1]
        if self.single:
            src = cv2.extractChannel(src, 0)
        shape = src.shape
        do_sharpen = edits.sharpen != 0.0
        need_before = edits.opacity != 1.0 or (do_sharpen and not self.filled)
        before = cv2.LUT(src, _IDENTITY_F32, dst=_scratch("before", shape)) if need_before else None
        x = cv2.LUT(src, self.lut, dst=_scratch("x", shape))  # brightness, contrast, gamma (float32, clipped)

        if self.do_hsv:
            cv2.cvtColor(x, cv2.COLOR_RGB2HSV, dst=x)  # float32: H in degrees [0, 360), S and V in [0, 1]
            # OpenCV's HSV->RGB reduces any H >= 0 modulo 360 itself, so a rotation only needs a non-negative
            # shift. Per-channel scalar add and multiply (one rounding each, so the same bytes as an affine
            # transform, ~4x faster than cv2.transform on float32).
            shift = np.float32(edits.hue if edits.hue >= 0.0 else edits.hue + 360.0)
            gain = np.float32(1.0 + edits.saturation)
            if shift:
                cv2.add(x, (float(shift), 0.0, 0.0, 0.0), dst=x)
            if gain != 1.0:
                cv2.multiply(x, (1.0, float(gain), 1.0, 1.0), dst=x)
            if gain > 1.0:  # S >= 0 always (gain >= 0); only the upper bound can be crossed
                cv2.min(x, (1e9, 1.0, 1e9, 0.0), dst=x)
            _clip01(cv2.cvtColor(x, cv2.COLOR_HSV2RGB, dst=x))

        if do_sharpen:
            # The blur must see the image as it is at this step: edited inside the mask, untouched outside.
            if not self.filled:
                assert before is not None
                cv2.copyTo(before, 1 - self.m8[y0:y1, rx0:rx1], x)
            blurred = cv2.GaussianBlur(
                x,
                (SHARPEN_KSIZE, SHARPEN_KSIZE),
                SHARPEN_SIGMA,
                dst=_scratch("blur", shape),
                borderType=cv2.BORDER_REFLECT_101,
            )
            a = edits.sharpen
            _clip01(cv2.addWeighted(x, 1.0 + a, blurred, -a, 0.0, dst=x))  # x + a * (x - G(x))

        # From here on only the strip's own rows of the bounding box matter.
        strip_rows = slice(top - y0, bottom - y0)
        strip_cols = slice(bx - rx0, bx - rx0 + bw)
        xb = x[strip_rows, strip_cols]
        before_b = None if before is None else before[strip_rows, strip_cols]
        box_mask = self.m8[top:bottom, bx : bx + bw]
        rows = bottom - top

        if self.rng is not None:
            channels = self.noise_channels
            inside = int(cv2.countNonZero(box_mask))
            noise = self.rng.standard_normal(dtype=np.float32, out=_scratch("noise", (inside, channels)))
            noise *= np.float32(edits.noise)
            if inside == rows * bw:
                # The strip is all mask: row-major mask order is the strip's own order.
                noise_img = noise.reshape(rows, bw, channels)
            else:
                noise_img = _scatter_rows(
                    noise, box_mask.view(bool), _scratch("noise_img", (rows, bw, channels))
                )
            if self.single:
                noise_img = noise_img.reshape(rows, bw)
            elif channels == 1:
                noise_img = cv2.cvtColor(
                    noise_img.reshape(rows, bw), cv2.COLOR_GRAY2RGB, dst=_scratch("noise_rgb", (rows, bw, 3))
                )
            _clip01(cv2.add(xb, noise_img, dst=xb))

        if not xb.flags.c_contiguous:
            xb = np.ascontiguousarray(xb)
        result = _finish(xb, before_b, edits.opacity, out=_scratch("result", xb.shape, np.uint8))
        if self.single:
            result = cv2.cvtColor(
                result, cv2.COLOR_GRAY2RGB, dst=_scratch("result_rgb", (rows, bw, 3), np.uint8)
            )
        cv2.copyTo(result, box_mask, self.out[top:bottom, bx : bx + bw])


def _channels_equal(rgb: np.ndarray) -> bool:
    r, g, b = rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]
    return bool(np.array_equal(r, g) and np.array_equal(g, b))
