"""Writes of the deprecated single-image flow and the legacy batch endpoints, on persisted, owned rows.

A ``LegacySession`` is one image opened with ``/sam/init`` (its id is the old ``image_id``); its ``points``
accumulate pixel points across ``/sam/segment`` calls; a ``Component`` is a saved mask, numbered from 1 per
image. Nothing here re-implements the dataset services: uploads are read, size-checked, decoded and named
with ``datasets.services.images``' rules, segmentation is ``datasets.services.previews``' (one embedding
cache, the same multimask choice, best first, at most MAX_CANDIDATES), edits are ``imaging.edits``
(EDITS.md), so these endpoints behave exactly like the dataset flows.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Max

from datasets.image_io import decode_stored_image, read_file_bytes, stored_suffix
from datasets.prompts import check_points_limit
from datasets.segmentation import app_segmenter
from datasets.services.names import clean_display_name
from datasets.services.previews import MAX_CANDIDATES, best_candidates, content_embedding
from datasets.services.uploads import (
    UploadTooLarge,
    max_image_pixels,
    read_upload,
    sanitize_filename,
)
from imaging.codecs import (
    DecodedImage,
    b64decode,
    decode_image,
    decode_mask_png,
    encode_image,
    encode_mask_png,
    sha256_hex,
)
from imaging.edits import Edits, apply_edits
from imaging.errors import EditValidationError, ImageDecodeError
from imaging.pipeline import output_pixels
from imaging.points import Point, parse_points
from imaging.segmenter import Embedding, MaskCandidate, Segmenter, mask_bbox
from legacy.models import Component, LegacySession
from samsite.common.errors import ServiceError

BATCH_MODES = ("full", "center_point")


@dataclass(frozen=True)
class LegacySegmentation:
    """``candidates`` best score first (at most ``min(top_k, 3)``); ``points`` the session's pixel points."""

    candidates: list[MaskCandidate]
    points: list[dict]


@dataclass(frozen=True)
class LegacyApplyResult:
    rgb: np.ndarray
    mask: np.ndarray | None


@dataclass(frozen=True)
class BatchResult:
    session: LegacySession
    variant_png: bytes
    mask_png: bytes | None
    score: float


# --- sessions ------------------------------------------------------------------------------------------


def _read_image(file: UploadedFile) -> tuple[bytes, DecodedImage]:
    """The upload's bytes and pixels under the dataset uploads' limits (MAX_UPLOAD_MB, MAX_IMAGE_MEGAPIXELS);
    either refusal is the old tool's ``invalid_image``, its detail the dataset upload's rejection text."""
    try:
        data = read_upload(file)
    except UploadTooLarge as exc:
        raise ServiceError("invalid_image", exc.error) from None
    try:
        return data, decode_image(data, max_pixels=max_image_pixels())
    except ImageDecodeError as exc:
        raise ServiceError("invalid_image", str(exc)) from exc


def _create_session(*, owner: AbstractBaseUser, file: UploadedFile) -> tuple[LegacySession, DecodedImage]:
    data, image = _read_image(file)
    # The display name follows the dataset uploads' rule (sanitize_filename), so one name reads the same
    # in both flows.
    filename = sanitize_filename(file.name or "")
    session = LegacySession(
        owner=owner,
        filename=filename,
        width=image.width,
        height=image.height,
        sha256=sha256_hex(data),
        is_grayscale=image.is_grayscale,
        points=[],
    )
    # The stored suffix follows the decoded format, never the client's filename (x.html -> .png).
    session.image.save(f"image{stored_suffix(image.format)}", ContentFile(data), save=False)
    session.save()
    return session, image


def legacy_session_create(*, owner: AbstractBaseUser, file: UploadedFile) -> LegacySession:
    """Store an uploaded image as a new session of ``owner`` (the old ``/sam/init``).

    Raises ServiceError ``invalid_image`` for undecodable data or a file over MAX_UPLOAD_MB / the pixel limit.
    """
    session, _image = _create_session(owner=owner, file=file)
    return session


def _session_image(session: LegacySession) -> DecodedImage:
    try:
        return decode_stored_image(session.image)
    except (ImageDecodeError, OSError) as exc:
        raise ServiceError("invalid_image", f"the stored image cannot be read: {exc}", status=500) from exc


# --- segmentation --------------------------------------------------------------------------------------


def _pixel_points(raw: Any, *, width: int, height: int) -> list[dict]:
    """Validate pixel points (PointValidationError with the index of the bad one) and keep them as numbers."""
    parsed = parse_points(raw, units="px", width=width, height=height)
    return [
        {"x": float(item["x"]), "y": float(item["y"]), "positive": point.positive}
        for item, point in zip(raw, parsed, strict=True)
    ]


def _session_embedding(
    session: LegacySession, segmenter: Segmenter, image: DecodedImage | None = None
) -> Embedding:
    """The session image's embedding from the previews' cache; the stored file is decoded only on a miss
    (``image``: the pixels when the caller already has them)."""
    embedding, _cached = content_embedding(
        sha256=session.sha256,
        size=(session.width, session.height),
        segmenter=segmenter,
        load=(lambda: image) if image is not None else (lambda: _session_image(session)),
    )
    return embedding


def legacy_segment(
    *,
    session: LegacySession,
    points: Sequence[Mapping] | None,
    accumulate: bool = True,
    top_k: int = MAX_CANDIDATES,
) -> LegacySegmentation:
    """Segment the session's image from pixel points (the old ``/sam/segment``).

    With ``accumulate`` the points are added to the session's earlier points, otherwise they replace them;
    the session keeps the result. Masks come from ``datasets.services.previews`` (the shared embedding cache:
    encoded at most once per image content and model; candidates best first, at most ``min(top_k,
    MAX_CANDIDATES)``). Raises PointValidationError (bad point, with its index), ServiceError ``no_points``
    when no point is left, SegmenterUnavailable when SAM is required but absent.
    """
    check_points_limit(len(points or []) if isinstance(points, list) else 0)
    new_points = _pixel_points(
        points if points is not None else [], width=session.width, height=session.height
    )
    segmenter = app_segmenter()
    embedding = _session_embedding(session, segmenter)
    with transaction.atomic():
        # The row lock serialises concurrent clicks on one image, so no accumulated point is lost.
        locked = LegacySession.objects.select_for_update().get(pk=session.pk)
        combined = [*(locked.points or []), *new_points] if accumulate else new_points
        if not combined:
            raise ServiceError("no_points", "at least one point is required")
        # Accumulated points are one prompt: the limit holds across calls (send accumulate=false to restart).
        check_points_limit(len(combined))
        locked.points = combined
        locked.save(update_fields=["points", "updated"])
    session.points = combined
    parsed = parse_points(combined, units="px", width=session.width, height=session.height)
    candidates = best_candidates(segmenter=segmenter, embedding=embedding, points=parsed)
    return LegacySegmentation(candidates=candidates[:top_k], points=combined)


# --- components ----------------------------------------------------------------------------------------


def whole_number(value: Any) -> int:
    """An integer field as the old clients send it: a finite whole number or a numeric string (``"2"``,
    ``2.0``), never a bool; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a bool is not a number")
    try:
        number = float(value)
    except TypeError:
        raise ValueError(f"not a number: {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"not a whole number: {value!r}")
    return int(number)


def _parse_score(value: Any) -> float:
    if value is None or value == "":
        return 0.0
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ServiceError("invalid_score", "score must be a number") from None
    if not math.isfinite(number):
        raise ServiceError("invalid_score", "score must be a finite number")
    return number


def _component_name(value: Any, number: int) -> str:
    """The datasets' display-name rule (``clean_display_name``), except that no name, or one left blank once
    cleaned, is the old tool's default ``component_<number>``."""
    if value is None:
        return f"component_{number}"
    try:
        cleaned = clean_display_name(value, max_length=sys.maxsize)
    except ServiceError:
        if isinstance(value, str):  # a string is refused only when blank: the default name
            return f"component_{number}"
        raise
    return clean_display_name(cleaned, max_length=Component._meta.get_field("name").max_length)


def decode_session_mask(session: LegacySession, mask_png: Any) -> np.ndarray:
    """A base64 PNG mask of the session's image size; ServiceError ``invalid mask_png`` otherwise."""
    if not isinstance(mask_png, str | bytes) or not mask_png:
        raise ServiceError("invalid mask_png", "mask_png must be a base64 PNG")
    try:
        return decode_mask_png(b64decode(mask_png), expected_size=(session.width, session.height))
    except ImageDecodeError as exc:
        raise ServiceError("invalid mask_png", str(exc)) from exc


def _store_component(*, session: LegacySession, mask: np.ndarray, score: float, name: Any) -> Component:
    bbox = mask_bbox(mask)
    if bbox is None:
        raise ServiceError("invalid mask_png", "the mask is empty")
    with transaction.atomic():
        # Numbers count from 1 per image; the session lock makes two concurrent saves take 1 and 2.
        LegacySession.objects.select_for_update().filter(pk=session.pk).values_list("pk").first()
        number = (session.components.aggregate(top=Max("number"))["top"] or 0) + 1
        component = Component(
            session=session,
            number=number,
            name=_component_name(name, number),
            bbox=list(bbox),
            area=int(np.count_nonzero(mask)),
            score=score,
        )
        component.mask.save(f"mask_{number}.png", ContentFile(encode_mask_png(mask)), save=False)
        component.save()
    return component


def component_save(
    *, session: LegacySession, mask_png: Any, score: Any = None, name: Any = None
) -> Component:
    """Save a chosen mask as the session's next component (the old ``/sam/save_component``).

    ``mask_png`` is a base64 PNG (a ``data:`` prefix is tolerated) of exactly the image's size; any non-zero
    pixel is inside. Raises ServiceError ``invalid mask_png`` (undecodable, not base64, wrong size, empty),
    ``invalid_score``, ``invalid_name``. The name defaults to ``component_<id>``.
    """
    mask = decode_session_mask(session, mask_png)
    return _store_component(session=session, mask=mask, score=_parse_score(score), name=name)


def _component_mask(component: Component, session: LegacySession) -> np.ndarray:
    return decode_mask_png(read_file_bytes(component.mask), expected_size=(session.width, session.height))


def _component_number(value: Any, index: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        return whole_number(value)
    except ValueError:
        raise ServiceError(
            "invalid_edits", "component_id must be an integer", field="component_id", index=index
        ) from None


def legacy_apply(*, session: LegacySession, edits: Any, export_mask: bool = False) -> LegacyApplyResult:
    """Apply a list of edits, in list order, each inside its component (the old ``/sam/apply``).

    Each edit is ``{component_id, brightness, ...}``; missing fields are neutral, unknown keys ignored. An
    edit without ``component_id`` applies inside the union of all components; when the image has no
    component, inside the whole image. ``export_mask`` returns the union of the masks edited (of every
    component when no edit is given). Raises ServiceError ``invalid_edits`` (``field``, ``index``) and
    ``component_not_found`` (404, ``component_id``).
    """
    if edits is None:
        edits = []
    elif isinstance(edits, Mapping):
        edits = [edits]
    if not isinstance(edits, list):
        raise ServiceError("invalid_edits", "edits must be a list of objects", field="edits")
    image = _session_image(session)
    components = {c.number: c for c in session.components.order_by("number")}
    masks: dict[int, np.ndarray] = {}

    def mask_of(number: int) -> np.ndarray:
        if number not in masks:
            masks[number] = _component_mask(components[number], session)
        return masks[number]

    whole = np.ones((image.height, image.width), dtype=bool)
    used: list[np.ndarray] = []
    out = image.rgb
    for index, item in enumerate(edits):
        if not isinstance(item, Mapping):
            raise ServiceError("invalid_edits", f"edit {index} must be an object", field="edits", index=index)
        try:
            values = Edits.from_dict(item, strict=False)
        except EditValidationError as exc:
            raise ServiceError("invalid_edits", str(exc), field=exc.field, index=index) from exc
        number = _component_number(item.get("component_id"), index)
        if not components:
            mask, seed_id = whole, number or 1
        elif number is None:
            mask, seed_id = np.logical_or.reduce([mask_of(n) for n in components]), 1
        elif number in components:
            mask, seed_id = mask_of(number), number
        else:
            raise ServiceError(
                "component_not_found", f"component {number} not found", status=404, component_id=number
            )
        out = apply_edits(out, mask, values, is_grayscale=image.is_grayscale, component_id=seed_id)
        used.append(mask)
    union = None
    if export_mask:
        if not used:
            used = [mask_of(n) for n in components] or [whole]
        union = np.logical_or.reduce(used)
    return LegacyApplyResult(rgb=output_pixels(out, image.is_grayscale), mask=union)


# --- batch ---------------------------------------------------------------------------------------------


def batch_check(*, mode: str) -> None:
    """Refuse a batch before any file is read: unknown mode (400), no model for ``center_point`` (503)."""
    if mode not in BATCH_MODES:
        raise ServiceError("invalid mode", f"mode must be one of {', '.join(BATCH_MODES)}")
    if mode == "center_point":
        app_segmenter()


def batch_image_process(
    *, owner: AbstractBaseUser, file: UploadedFile, mode: str, edits: Edits, export_mask: bool = False
) -> BatchResult:
    """One file of the old ``/sam/batch_process``: store it as a session, find its region, apply ``edits``.

    ``full``: the whole image is the component (score 1.0). ``center_point``: the best mask for one positive
    point at the image centre. The region is saved as the session's component 1, so the returned session can
    be refined with the single-image endpoints. Raises ServiceError ``invalid_image``.
    """
    session, image = _create_session(owner=owner, file=file)
    if mode == "full":
        mask, score = np.ones((image.height, image.width), dtype=bool), 1.0
    else:
        segmenter = app_segmenter()
        embedding = _session_embedding(session, segmenter, image)
        best = best_candidates(segmenter=segmenter, embedding=embedding, points=[Point(0.5, 0.5, True)])[0]
        mask, score = best.mask, float(best.score)
    if mask.any():
        _store_component(session=session, mask=mask, score=score, name=f"batch_{mode}")
    out = apply_edits(image.rgb, mask, edits, is_grayscale=image.is_grayscale, component_id=1)
    out = output_pixels(out, image.is_grayscale)  # a grayscale upload stays one channel
    return BatchResult(
        session=session,
        variant_png=encode_image(out, "png"),
        mask_png=encode_mask_png(mask) if export_mask else None,
        score=score,
    )
