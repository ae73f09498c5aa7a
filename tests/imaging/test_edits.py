"""Edits: validation, agreement with a plain float reference of EDITS.md, and the old tool's bugs."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from scipy import ndimage
from skimage import color

from imaging.edits import EDIT_FIELDS, EDIT_RANGES, Edits, apply_edits, noise_seed
from imaging.errors import EditValidationError, ImagingError

# -- a straightforward reference, written from the formulas of EDITS.md ----------------------------------------


def reference_edits(
    rgb: np.ndarray, mask: np.ndarray, e: Edits, *, is_grayscale: bool, component_id: int = 1
) -> np.ndarray:
    """Whole-image float implementation: every step computed everywhere, written only inside the mask."""
    inside = mask.astype(bool)
    x = rgb.astype(np.float32) / np.float32(255)
    before = x.copy()

    def step(y: np.ndarray) -> None:
        nonlocal x
        y = np.clip(y.astype(np.float32), 0, 1)
        x = np.where(inside[:, :, None], y, x).astype(np.float32)

    if e.brightness:
        step(x + np.float32(e.brightness))
    if e.contrast:
        step((x - np.float32(0.5)) * np.float32(1 + e.contrast) + np.float32(0.5))
    if e.gamma:
        step(x ** np.float32(1 / max(1e-3, 1 + e.gamma)))
    if e.hue and not is_grayscale:
        hsv = color.rgb2hsv(x)
        hsv[..., 0] = np.mod(hsv[..., 0] + e.hue / 360.0, 1.0)
        step(color.hsv2rgb(hsv))
    if e.saturation and not is_grayscale:
        hsv = color.rgb2hsv(x)
        hsv[..., 1] = np.clip(hsv[..., 1] * (1 + e.saturation), 0, 1)
        step(color.hsv2rgb(hsv))
    if e.sharpen:
        # mode "mirror" is OpenCV's reflect-101; truncate 4 sigma gives the 9x9 kernel.
        blurred = ndimage.gaussian_filter(x, sigma=(1.0, 1.0, 0.0), mode="mirror", truncate=4.0)
        step(x + np.float32(e.sharpen) * (x - blurred))
    if e.noise:
        area = int(inside.sum())
        rng = np.random.default_rng((area * (component_id + 13)) % (2**32 - 1))
        channels = 1 if is_grayscale else 3
        n = rng.standard_normal((area, channels), dtype=np.float32) * np.float32(e.noise)
        y = x.copy()
        y[inside] += n  # row-major order of the mask pixels; broadcasts one value to RGB when grayscale
        step(y)
    if e.opacity != 1:
        step(np.float32(e.opacity) * x + np.float32(1 - e.opacity) * before)
    return np.floor(x * np.float32(255) + np.float32(0.5)).astype(np.uint8)


def ellipse_mask(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def masks_for(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    h, w = shape
    corner = np.zeros(shape, dtype=bool)
    corner[: h // 3, w // 2 :] = True  # a rectangle touching the image border (blur border handling)
    return {
        "ellipse": ellipse_mask(shape, h * 0.55, w * 0.45, h * 0.3, w * 0.25),
        "corner": corner,
    }


EDIT_GRID = [
    Edits(brightness=0.2),
    Edits(brightness=-0.7),
    Edits(contrast=0.6),
    Edits(contrast=-1.0),
    Edits(gamma=0.8),
    Edits(gamma=-0.9),
    Edits(hue=120),
    Edits(hue=-180),
    Edits(saturation=2.5),
    Edits(saturation=-1.0),
    Edits(sharpen=2.0),
    Edits(noise=0.2),
    Edits(brightness=0.1, contrast=0.3, gamma=0.4, opacity=0.35),
    Edits(
        brightness=0.1, contrast=0.2, gamma=0.3, hue=45, saturation=0.5, sharpen=1.0, noise=0.05, opacity=0.8
    ),
    Edits(brightness=-0.2, hue=-90, saturation=1.5, sharpen=0.5, noise=0.1, opacity=0.5),
]


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize(
    "edits",
    EDIT_GRID,
    ids=lambda e: ",".join(
        f"{k}={v:g}" for k, v in e.to_dict().items() if v != (1.0 if k == "opacity" else 0.0)
    ),
)
@pytest.mark.parametrize("photo", ["colour", "grayscale"])
def test_matches_reference_within_one_level(edits, photo, astronaut, camera_rgb):
    rgb, gray = (astronaut, False) if photo == "colour" else (camera_rgb, True)
    for name, mask in masks_for(rgb.shape[:2]).items():
        fast = apply_edits(rgb, mask, edits, is_grayscale=gray, component_id=3)
        ref = reference_edits(rgb, mask, edits, is_grayscale=gray, component_id=3)
        assert _max_diff(fast, ref) <= 1, name
        # Byte-identical outside the mask.
        assert np.array_equal(fast[~mask], rgb[~mask]), name
        if edits.brightness or edits.sharpen or edits.noise:
            assert not np.array_equal(fast[mask], rgb[mask]), name


@pytest.mark.parametrize(
    "edits", [e for e in EDIT_GRID if not (e.hue or e.saturation or e.sharpen or e.noise)]
)
def test_tone_only_is_exact(edits, astronaut):
    """The single-table path does the reference's float32 arithmetic exactly: no tolerance needed."""
    mask = masks_for(astronaut.shape[:2])["ellipse"]
    fast = apply_edits(astronaut, mask, edits, is_grayscale=False)
    assert np.array_equal(fast, reference_edits(astronaut, mask, edits, is_grayscale=False))


def test_returns_new_array_and_leaves_input_alone(astronaut):
    original = astronaut.copy()
    mask = masks_for(astronaut.shape[:2])["ellipse"]
    out = apply_edits(astronaut, mask, EDIT_GRID[-2], is_grayscale=False)
    assert out is not astronaut and not np.shares_memory(out, astronaut)
    assert np.array_equal(astronaut, original)


@pytest.mark.parametrize(
    "edits",
    [
        Edits(),
        Edits.from_dict({"brightness": None, "hue": 0, "opacity": 1}),
        Edits(brightness=0.5, opacity=0.0),
    ],
)
def test_neutral_edits_are_identity(edits, astronaut):
    mask = np.ones(astronaut.shape[:2], dtype=bool)
    out = apply_edits(astronaut, mask, edits, is_grayscale=False)
    assert np.array_equal(out, astronaut) and out is not astronaut


def test_empty_mask_is_identity(astronaut):
    out = apply_edits(astronaut, np.zeros(astronaut.shape[:2], bool), EDIT_GRID[-2], is_grayscale=False)
    assert np.array_equal(out, astronaut)


def test_hue_and_saturation_are_skipped_on_grayscale(camera_rgb):
    mask = np.ones(camera_rgb.shape[:2], dtype=bool)
    out = apply_edits(camera_rgb, mask, Edits(hue=90, saturation=2), is_grayscale=True)
    assert np.array_equal(out, camera_rgb)


def test_single_pixel_mask(astronaut):
    mask = np.zeros(astronaut.shape[:2], dtype=bool)
    mask[0, 511] = True
    e = Edits(brightness=0.1, sharpen=1.0, noise=0.1, hue=30)
    out = apply_edits(astronaut, mask, e, is_grayscale=False)
    assert _max_diff(out, reference_edits(astronaut, mask, e, is_grayscale=False)) <= 1
    assert np.array_equal(out[~mask], astronaut[~mask])


def test_non_bool_mask_accepted(astronaut):
    mask = masks_for(astronaut.shape[:2])["ellipse"]
    e = Edits(brightness=0.3, noise=0.05)
    a = apply_edits(astronaut, mask, e, is_grayscale=False)
    b = apply_edits(astronaut, mask.astype(np.uint8) * 255, e, is_grayscale=False)
    assert np.array_equal(a, b)


def test_threads_give_identical_results(astronaut):
    mask = masks_for(astronaut.shape[:2])["ellipse"]
    expected = {i: apply_edits(astronaut, mask, e, is_grayscale=False) for i, e in enumerate(EDIT_GRID)}
    results: dict[tuple[int, int], np.ndarray] = {}

    def work(worker: int) -> None:
        for _ in range(2):
            for i, e in enumerate(EDIT_GRID):
                results[(worker, i)] = apply_edits(astronaut, mask, e, is_grayscale=False)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (_, i), out in results.items():
        assert np.array_equal(out, expected[i])


@pytest.mark.parametrize("gray", [False, True], ids=["colour", "grayscale"])
def test_strips_give_the_bytes_of_one_pass(monkeypatch, astronaut, camera_rgb, gray):
    """The general path runs in strips of rows (cache-sized): each strip's blur reads its margin of rows and
    the noise continues one generator, so strip boundaries change no byte against a single pass."""
    import imaging.edits as edits_module

    photo = camera_rgb if gray else astronaut
    rng = np.random.default_rng(3)
    ragged = masks_for(photo.shape[:2])["ellipse"] & (rng.random(photo.shape[:2]) > 0.2)
    grid = [
        Edits(brightness=0.1, hue=30, saturation=0.4, sharpen=1.2, noise=0.05, opacity=0.7),
        Edits(gamma=0.5, sharpen=2.0),
        Edits(noise=0.2),
    ]
    for mask in (ragged, masks_for(photo.shape[:2])["corner"]):
        monkeypatch.setattr(edits_module, "_STRIP_BYTES", 1 << 40)  # one strip: the whole region
        single = [apply_edits(photo, mask, e, is_grayscale=gray) for e in grid]
        monkeypatch.setattr(edits_module, "_STRIP_BYTES", 1)  # the smallest strips (16 rows)
        for e, expected in zip(grid, single, strict=True):
            assert np.array_equal(apply_edits(photo, mask, e, is_grayscale=gray), expected), e


# -- one test per bug of the old tool --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edits,metric",
    [
        (Edits(brightness=0.25, hue=40), lambda p: p.mean()),
        (Edits(contrast=0.6, saturation=0.5), lambda p: p.std()),
        (Edits(gamma=1.0, hue=40), lambda p: p.mean()),
        (Edits(sharpen=2.0, hue=40), lambda p: np.abs(np.diff(p.astype(float), axis=0)).mean()),
    ],
)
def test_colour_image_keeps_tone_and_sharpen_with_hsv(edits, metric, astronaut):
    """The old tool lost brightness/contrast/gamma/sharpen on colour images when hue/saturation were set."""
    mask = np.zeros(astronaut.shape[:2], dtype=bool)
    mask[100:400, 100:400] = True
    hsv_only = Edits(hue=edits.hue, saturation=edits.saturation)
    with_effect = apply_edits(astronaut, mask, edits, is_grayscale=False)[100:400, 100:400]
    without = apply_edits(astronaut, mask, hsv_only, is_grayscale=False)[100:400, 100:400]
    assert metric(with_effect) > metric(without) * 1.05


def test_colour_image_keeps_noise(astronaut):
    mask = np.zeros(astronaut.shape[:2], dtype=bool)
    mask[100:400, 100:400] = True
    noisy = apply_edits(astronaut, mask, Edits(noise=0.1, hue=40), is_grayscale=False).astype(int)
    clean = apply_edits(astronaut, mask, Edits(hue=40), is_grayscale=False).astype(int)
    diff = (noisy - clean)[100:400, 100:400]
    assert 0.1 * 255 * 0.8 < diff.std() < 0.1 * 255 * 1.2
    # Colour noise: channels get independent values.
    assert not np.array_equal(diff[..., 0], diff[..., 1])


def test_missing_hue_and_saturation_are_fine(astronaut):
    edits = Edits.from_dict({"brightness": 0.2, "contrast": 0.1})
    assert edits.hue == 0.0 and edits.saturation == 0.0
    mask = np.ones(astronaut.shape[:2], dtype=bool)
    out = apply_edits(astronaut, mask, edits, is_grayscale=False)
    assert out.mean() > astronaut.mean()


@pytest.mark.parametrize("orientation", ["vertical", "horizontal"])
@pytest.mark.parametrize("gray", [True, False])
def test_sharpen_is_two_dimensional(orientation, gray):
    """An edge gets overshoot on both sides across it, whatever its orientation (the old tool sharpened a
    flattened pixel list, i.e. along one axis only), and flat areas stay flat."""
    img = np.full((40, 40, 3), 77, dtype=np.uint8)
    if orientation == "vertical":
        img[:, 20:] = 178
    else:
        img[20:, :] = 178
    if not gray:
        img[..., 1] //= 2
    mask = np.ones(img.shape[:2], dtype=bool)
    out = apply_edits(img, mask, Edits(sharpen=1.0), is_grayscale=gray).astype(int)
    line = out[20, :, 0] if orientation == "vertical" else out[:, 20, 0]
    assert line[19] < 77 < 178 < line[20]  # undershoot before the edge, overshoot after it
    assert line[5] == 77 and line[35] == 178  # far from the edge: unchanged
    other = out[:, 20, 0] if orientation == "vertical" else out[20, :, 0]
    assert np.all(other == other[0])  # along the edge: constant


def test_noise_keeps_grayscale_grayscale(camera_rgb):
    mask = masks_for(camera_rgb.shape[:2])["ellipse"]
    out = apply_edits(camera_rgb, mask, Edits(noise=0.2, hue=50, saturation=1), is_grayscale=True)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert not np.array_equal(out, camera_rgb)


def test_grayscale_flag_on_non_equal_channels_still_gives_equal_noise(astronaut):
    """is_grayscale with channels that differ (a caller's choice) still adds one noise value per pixel."""
    mask = np.ones(astronaut.shape[:2], dtype=bool)
    out = apply_edits(astronaut, mask, Edits(noise=0.05), is_grayscale=True).astype(int)
    ref = reference_edits(astronaut, mask, Edits(noise=0.05), is_grayscale=True)
    assert _max_diff(out.astype(np.uint8), ref) <= 1


def test_rounds_instead_of_truncating():
    img = np.full((4, 4, 3), 100, dtype=np.uint8)
    mask = np.ones((4, 4), dtype=bool)
    # 100/255 + 0.6/255 is 100.6 grey levels: rounds to 101, truncation would keep 100.
    out = apply_edits(img, mask, Edits(brightness=0.6 / 255), is_grayscale=True)
    assert out[0, 0].tolist() == [101, 101, 101]
    out = apply_edits(img, mask, Edits(brightness=0.4 / 255), is_grayscale=True)
    assert out[0, 0].tolist() == [100, 100, 100]
    # The same in the general (float image) path: opacity 0.5 between 100 and 150.6 gives 125.3 → 125.
    out = apply_edits(img, mask, Edits(brightness=50.6 / 255, opacity=0.5, sharpen=0.5), is_grayscale=True)
    assert out[0, 0].tolist() == [125, 125, 125]


def test_noise_follows_the_seed_formula():
    img = np.full((30, 40, 3), 128, dtype=np.uint8)
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:25, 3:30] = True
    mask[10, 3] = False  # not a rectangle: exercises the scatter path
    area = int(mask.sum())
    sigma = 0.05
    for component_id in (1, 7):
        out = apply_edits(img, mask, Edits(noise=sigma), is_grayscale=True, component_id=component_id)
        seed = (area * (component_id + 13)) % (2**32 - 1)
        assert noise_seed(area, component_id) == seed
        n = np.random.default_rng(seed).standard_normal((area, 1), dtype=np.float32) * np.float32(sigma)
        expected = np.floor(np.clip(np.float32(128 / 255) + n[:, 0], 0, 1) * 255 + np.float32(0.5))
        assert np.array_equal(out[mask][:, 0], expected.astype(np.uint8))
    a = apply_edits(img, mask, Edits(noise=sigma), is_grayscale=True, component_id=1)
    b = apply_edits(img, mask, Edits(noise=sigma), is_grayscale=True, component_id=1)
    c = apply_edits(img, mask, Edits(noise=sigma), is_grayscale=True, component_id=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_opacity_blends_against_input(astronaut):
    mask = np.ones(astronaut.shape[:2], dtype=bool)
    full = apply_edits(astronaut, mask, Edits(brightness=0.4), is_grayscale=False).astype(np.float32)
    half = apply_edits(astronaut, mask, Edits(brightness=0.4, opacity=0.5), is_grayscale=False).astype(int)
    expected = np.floor(0.5 * full + 0.5 * astronaut + 0.5)
    assert np.abs(half - expected).max() <= 1


# -- validation ------------------------------------------------------------------------------------------------


def test_fields_and_ranges():
    assert EDIT_FIELDS == (
        "brightness",
        "contrast",
        "gamma",
        "hue",
        "saturation",
        "sharpen",
        "noise",
        "opacity",
    )
    assert EDIT_RANGES == {
        "brightness": (-1.0, 1.0),
        "contrast": (-1.0, 1.0),
        "gamma": (-0.9, 2.0),
        "hue": (-180.0, 180.0),
        "saturation": (-1.0, 3.0),
        "sharpen": (0.0, 2.0),
        "noise": (0.0, 0.2),
        "opacity": (0.0, 1.0),
    }


def test_from_dict_defaults_and_round_trip():
    assert Edits.from_dict(None) == Edits() and Edits.from_dict({}) == Edits()
    assert Edits().is_neutral and not Edits(gamma=0.1).is_neutral and not Edits(opacity=0.5).is_neutral
    assert Edits.from_dict({"opacity": None}).opacity == 1.0
    e = Edits.from_dict({"brightness": "0.25", "hue": " -30 ", "noise": 0, "opacity": "1"})
    assert (e.brightness, e.hue, e.noise, e.opacity) == (0.25, -30.0, 0.0, 1.0)
    d = e.to_dict()
    assert list(d) == list(EDIT_FIELDS) and all(isinstance(v, float) for v in d.values())
    assert Edits.from_dict(d) == e
    assert Edits.from_dict({"brightness": 1, "gamma": 2, "hue": -180}).to_dict()["gamma"] == 2.0


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("brightness", float("nan"), "finite"),
        ("contrast", float("inf"), "finite"),
        ("gamma", "-inf", "finite"),
        ("hue", "NaN", "finite"),
        ("saturation", 3.01, "between"),
        ("gamma", -0.95, "between"),
        ("noise", 0.3, "between"),
        ("sharpen", -0.1, "between"),
        ("opacity", 1.5, "between"),
        ("hue", 181, "between"),
        ("brightness", "abc", "number"),
        ("brightness", True, "boolean"),
        ("opacity", False, "boolean"),
        ("contrast", [0.1], "number"),
        ("contrast", {"v": 1}, "number"),
    ],
)
def test_invalid_values_name_the_field(field, value, message):
    with pytest.raises(EditValidationError) as info:
        Edits.from_dict({field: value})
    assert info.value.field == field
    assert field in str(info.value) and message in str(info.value)
    assert isinstance(info.value, ImagingError)


def test_unknown_keys_strict_vs_lenient():
    with pytest.raises(EditValidationError) as info:
        Edits.from_dict({"brightness": 0.1, "blur": 2})
    assert info.value.field == "blur" and "blur" in str(info.value)
    lenient = Edits.from_dict({"brightness": 0.1, "blur": 2}, strict=False)
    assert lenient.brightness == 0.1
    # Lenient mode still validates the known fields.
    with pytest.raises(EditValidationError):
        Edits.from_dict({"brightness": 2, "blur": 2}, strict=False)


def test_direct_construction_validates():
    with pytest.raises(EditValidationError):
        Edits(noise=math.inf)
    with pytest.raises(EditValidationError):
        Edits.from_dict(["brightness"])  # type: ignore[arg-type]
