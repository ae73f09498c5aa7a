"""The no-weights default segmenter: point-seeded OpenCV GrabCut.

Method (deterministic; ``cv2.setRNGSeed`` before every GrabCut, whose GMM initialisation uses k-means):

1. ``encode`` downsizes the image so its longest side is :data:`WORK_SIDE` px (area interpolation; never
   upsized). GrabCut's cost grows with the pixel count: at 256 px one candidate takes ~0.1-0.2 s on one core,
   at 512 px ~0.6 s per iteration, too slow for three candidates.
2. ``predict`` seeds a GrabCut mask per candidate: positive points → sure-foreground discs, negative points →
   sure-background discs, a "probable foreground" prior around the positive points (a disc of the candidate's
   radius around each, plus their convex hull, restricted to pixels whose Lab colour is close to the colours
   under the positive points), probable background elsewhere. The three candidates use small, medium and large
   prior radii (like SAM's sub-part / part / whole). Without positive points, everything away from the
   negative points is the probable-foreground prior.
3. Post-processing keeps only the foreground components connected to a positive point and fills enclosed
   holes (unless a negative point lies in them), then the mask is upsampled to the original size (bilinear on
   0/255, threshold at 128, for smooth edges).
   With a box prompt, each candidate is GrabCut's rectangle initialisation instead (outside = sure
   background, inside = probable foreground, like ``GC_INIT_WITH_RECT``), on the box scaled by
   :data:`BOX_SCALES` around its centre (tight / as drawn / loose: the three granularities), with any points
   as sure-foreground / sure-background discs on top; without positive points every component in the box
   is kept.
4. Score, in [0, 1): boundary contrast ``g_b / (g_b + g_i)`` where ``g_b`` is the mean Lab gradient magnitude
   on the mask boundary (excluding where the image edge cuts it) and ``g_i`` the mean over the whole image,
   times ``1 - f / 2`` where ``f`` is the fraction of the image border the mask covers. 0.5 contrast means the
   boundary is no stronger than a typical pixel; objects cut along real edges score higher, and masks that
   spill over the frame (usually background) lower. Empty or full masks score 0.
"""

from __future__ import annotations

import cv2
import numpy as np

from imaging.segmenter import Embedding, MaskCandidate, Prompt, SegmenterBase, check_rgb

WORK_SIDE = 256
FINGERPRINT = "classical-v1"
#: Probable-foreground radii of the three candidates, as fractions of the working image's longest side.
PRIOR_RADII = (0.12, 0.25, 0.45)
#: The box prompt's three candidates: the box scaled by these factors around its centre.
BOX_SCALES = (0.85, 1.0, 1.15)
GRABCUT_ITERATIONS = 2
_RNG_SEED = 0x5A4D
# Lab distance (OpenCV 8-bit Lab units) under which a pixel counts as "like" a positive point's colour.
_COLOUR_TOLERANCE = 40.0


class ClassicalSegmenter(SegmenterBase):
    """GrabCut seeded by point prompts (see the module docstring). Thread-safe and deterministic."""

    backend = "classical"
    family = "classical"
    label = "Classical (GrabCut)"
    fingerprint = FINGERPRINT
    model_type: str | None = None
    device = "cpu"
    # Encoding is a resize: cheaper to redo than to read back from disk.
    cacheable = False

    def __repr__(self) -> str:
        return "ClassicalSegmenter()"

    def encode(self, rgb: np.ndarray) -> Embedding:
        """Downscale to :data:`WORK_SIDE` px longest side; the features are that small RGB image."""
        check_rgb(rgb)
        h, w = rgb.shape[:2]
        scale = WORK_SIDE / max(h, w)
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        else:
            small = np.ascontiguousarray(rgb).copy()
        self._count_encodes(1)
        return Embedding(
            features=small,
            original_size=(int(h), int(w)),
            input_size=(int(small.shape[0]), int(small.shape[1])),
            fingerprint=self.fingerprint,
        )

    def _predict(self, embedding: Embedding, prompt: Prompt, multimask: bool) -> list[MaskCandidate]:
        """Three candidates (one when ``multimask`` is False: the medium radius / the box as drawn), best
        score first. The box: ``(x0, y0, x1, y1)`` in original image pixels, points optional with it."""
        coords, labels, box_arr = prompt.coords, prompt.labels, prompt.box
        small = np.ascontiguousarray(embedding.features)
        sh, sw = small.shape[:2]
        oh, ow = embedding.original_size
        # Pixel centres map as (x + 0.5) * scale - 0.5.
        xs = np.clip(np.rint((coords[:, 0] + 0.5) * (sw / ow) - 0.5), 0, sw - 1).astype(np.int32)
        ys = np.clip(np.rint((coords[:, 1] + 0.5) * (sh / oh) - 0.5), 0, sh - 1).astype(np.int32)
        pos = [(int(x), int(y)) for x, y, lab in zip(xs, ys, labels, strict=True) if lab == 1]
        neg = [(int(x), int(y)) for x, y, lab in zip(xs, ys, labels, strict=True) if lab != 1]
        lab_img = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
        gradient = _gradient_magnitude(lab_img)
        if box_arr is not None:
            # Box corners are pixel edges: scale them without the half-pixel centre shift.
            rect = (
                float(box_arr[0]) * sw / ow,
                float(box_arr[1]) * sh / oh,
                float(box_arr[2]) * sw / ow,
                float(box_arr[3]) * sh / oh,
            )
            params = list(enumerate(BOX_SCALES)) if multimask else [(None, BOX_SCALES[1])]
        else:
            params = list(enumerate(PRIOR_RADII)) if multimask else [(None, PRIOR_RADII[1])]
        candidates = []
        for index, param in params:
            if box_arr is not None:
                small_mask = _grabcut_box_candidate(small, pos, neg, rect, param)
            else:
                small_mask = _grabcut_candidate(small, lab_img, pos, neg, param)
            score = _mask_score(small_mask, gradient)
            up = cv2.resize(
                small_mask.view(np.uint8) * np.uint8(255), (ow, oh), interpolation=cv2.INTER_LINEAR
            )
            candidates.append(MaskCandidate(mask=up >= 128, score=score, index=index))
        order = sorted(range(len(candidates)), key=lambda i: (-candidates[i].score, i))
        return [candidates[i] for i in order]


def _gradient_magnitude(lab: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(lab, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt((gx * gx + gy * gy).sum(axis=2))


def _grabcut_candidate(
    small: np.ndarray, lab: np.ndarray, pos: list[tuple[int, int]], neg: list[tuple[int, int]], frac: float
) -> np.ndarray:
    """One GrabCut run at the working size; returns a bool mask (post-processed)."""
    sh, sw = small.shape[:2]
    longest = max(sh, sw)
    seed_r = max(2, round(0.012 * longest))
    prior_r = max(seed_r + 1, round(frac * longest))
    gc = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)

    prior = np.zeros((sh, sw), np.uint8)
    if pos:
        for x, y in pos:
            cv2.circle(prior, (x, y), prior_r, 1, -1)
        if len(pos) >= 3:
            hull = cv2.convexHull(np.array(pos, np.int32))
            cv2.fillConvexPoly(prior, hull, 1)
        elif len(pos) == 2:
            cv2.line(prior, pos[0], pos[1], 1, thickness=2 * seed_r + 1)
        # Restrict the prior to colours like those under the positive points, so the probable-foreground
        # region follows the object instead of being a disc (GrabCut then only has to refine it).
        seed_mask = np.zeros((sh, sw), np.uint8)
        for x, y in pos:
            cv2.circle(seed_mask, (x, y), seed_r, 1, -1)
        seed_colours = lab[seed_mask.astype(bool)]
        dist = np.min(
            np.linalg.norm(lab[:, :, None, :] - _colour_centres(seed_colours)[None, None], axis=3), axis=2
        )
        similar = (dist < _COLOUR_TOLERANCE).astype(np.uint8)
        prior &= similar
    else:
        prior[:] = 1
        for x, y in neg:
            cv2.circle(prior, (x, y), prior_r, 0, -1)
    gc[prior.astype(bool)] = cv2.GC_PR_FGD
    if pos:
        # Each candidate has a spatial scale: beyond twice its prior radius from every positive point is sure
        # background, which stops GrabCut's colour model from leaking across the whole image.
        reach = np.zeros((sh, sw), np.uint8)
        for x, y in pos:
            cv2.circle(reach, (x, y), 2 * prior_r, 1, -1)
        gc[reach == 0] = cv2.GC_BGD
    return _seeded_grabcut(small, gc, pos, neg, seed_r)


def _grabcut_box_candidate(
    small: np.ndarray,
    pos: list[tuple[int, int]],
    neg: list[tuple[int, int]],
    rect: tuple[float, float, float, float],
    scale: float,
) -> np.ndarray:
    """GrabCut's rectangle initialisation on ``rect`` (working pixels) scaled by ``scale`` around its centre,
    with the points as sure seeds; returns a bool mask (post-processed)."""
    sh, sw = small.shape[:2]
    cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
    hw, hh = (rect[2] - rect[0]) / 2 * scale, (rect[3] - rect[1]) / 2 * scale
    x0, x1 = int(np.clip(np.floor(cx - hw), 0, sw - 1)), int(np.clip(np.ceil(cx + hw), 1, sw))
    y0, y1 = int(np.clip(np.floor(cy - hh), 0, sh - 1)), int(np.clip(np.ceil(cy + hh), 1, sh))
    gc = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    gc[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = cv2.GC_PR_FGD
    seed_r = max(2, round(0.012 * max(sh, sw)))
    return _seeded_grabcut(small, gc, pos, neg, seed_r)


def _seeded_grabcut(
    small: np.ndarray, gc: np.ndarray, pos: list[tuple[int, int]], neg: list[tuple[int, int]], seed_r: int
) -> np.ndarray:
    """Both candidates' last step: the points as sure seeds on top of the prior label map ``gc`` (modified in
    place; negative discs twice the positive radius), GrabCut from it, and :func:`_clean`."""
    for x, y in neg:
        cv2.circle(gc, (x, y), 2 * seed_r, cv2.GC_BGD, -1)
    for x, y in pos:
        cv2.circle(gc, (x, y), seed_r, cv2.GC_FGD, -1)
    is_fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    # GrabCut needs samples on both sides to fit its colour models.
    if is_fg.sum() >= 8 and (~is_fg).sum() >= 8:
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(_RNG_SEED)
        cv2.grabCut(small, gc, None, bgd_model, fgd_model, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
        is_fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    return _clean(is_fg, pos, neg)


def _colour_centres(colours: np.ndarray, k: int = 4) -> np.ndarray:
    """Up to ``k`` representative Lab colours of the seed pixels (deterministic k-means, or all if few)."""
    if len(colours) <= k:
        return colours.reshape(-1, 3)
    cv2.setRNGSeed(_RNG_SEED)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, _, centres = cv2.kmeans(colours.astype(np.float32), k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    return centres


def _clean(fg: np.ndarray, pos: list[tuple[int, int]], neg: list[tuple[int, int]]) -> np.ndarray:
    """Keep components touching a positive point; fill enclosed holes that hold no negative point."""
    fg_u8 = fg.astype(np.uint8)
    if pos:
        _, labels = cv2.connectedComponents(fg_u8, connectivity=8)
        keep = {int(labels[y, x]) for x, y in pos} - {0}
        fg = np.isin(labels, list(keep)) if keep else np.zeros_like(fg)
    # Holes: background components (4-connected) that do not touch the border.
    n, labels = cv2.connectedComponents((~fg).astype(np.uint8), connectivity=4)
    if n > 2:
        border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
        protected = border | {int(labels[y, x]) for x, y in neg} | {0}
        holes = [i for i in range(1, n) if i not in protected]
        if holes:
            fg = fg | np.isin(labels, holes)
    return np.ascontiguousarray(fg)


def _mask_score(mask: np.ndarray, gradient: np.ndarray) -> float:
    """Boundary contrast, discounted for masks that cover much of the image border (see module docstring)."""
    area = int(mask.sum())
    if area == 0 or area == mask.size:
        return 0.0
    m8 = mask.astype(np.uint8)
    # The mask's own boundary, not counting where it is cut by the image edge (erode pads with the border
    # value, and the image edge says nothing about the object's edge).
    eroded = cv2.erode(m8, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    boundary = (m8 - eroded).astype(bool)
    g_b = float(gradient[boundary].mean()) if boundary.any() else 0.0
    g_i = float(gradient.mean())
    if g_b + g_i <= 0.0:
        return 0.0
    edge = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    border_fraction = float(edge.mean()) if edge.size else 0.0
    return g_b / (g_b + g_i) * (1.0 - 0.5 * border_fraction)
