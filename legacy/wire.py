"""The old tool's wire shapes, shared by the seed flows (``legacy.views``): request parsers turn the old fields
into service arguments (ServiceError with the old codes otherwise), response builders render our records in
the old JSON shapes (``shared/design/SEED_API.md``). No service logic lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from rest_framework.request import Request

from datasets.models import DatasetImage, OutputFormat
from datasets.services.previews import MAX_CANDIDATES
from imaging.edits import Edits
from legacy.models import Component
from legacy.services import whole_number
from samsite.common.errors import ServiceError
from samsite.common.parsers import loads_limited
from templates_app.models import Template

#: Upload errors whose old wire form is the message itself (``{"error": "max_images_exceeded:12/10"}``).
MESSAGE_AS_CODE = frozenset({"no_files", "max_images_exceeded", "zip_error"})
_FORMATS = {
    "png": OutputFormat.PNG,
    "jpeg": OutputFormat.JPEG,
    "jpg": OutputFormat.JPEG,
    "webp": OutputFormat.WEBP,
}


# --- request parsers -------------------------------------------------------------------------------------


def uploaded_files(request: Request, *names: str) -> list[UploadedFile]:
    """Every file sent under any of ``names`` (the old clients use ``images``, ``images[]`` or ``image``)."""
    return [upload for name in names for upload in request.FILES.getlist(name)]


def parse_format(value: Any) -> str:
    """An output format (``png``, ``jpeg``/``jpg``, ``webp``), PNG when absent; ``invalid_format`` otherwise."""
    if value in (None, ""):
        return OutputFormat.PNG
    fmt = _FORMATS.get(str(value).strip().lower())
    if fmt is None:
        raise ServiceError("invalid_format", "format must be one of png, jpeg, webp", field="format")
    return fmt


def parse_top_k(value: Any) -> int:
    """``top_k`` as sent (number or numeric string), default MAX_CANDIDATES; ``invalid_top_k`` otherwise."""
    if value is None or value == "":
        return MAX_CANDIDATES
    try:
        number = whole_number(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ServiceError("invalid_top_k", "top_k must be a positive integer")
    return number


def parse_batch_edits(value: Any) -> Edits:
    """The batch form's ``edits``: a JSON object string (or object), empty for none; ``invalid edits JSON``
    when it is not an object, EditValidationError for a bad value."""
    if value in (None, ""):
        return Edits()
    if isinstance(value, str):
        try:
            value = loads_limited(value)
        except ValueError:
            raise ServiceError("invalid edits JSON", "edits must be a JSON object string") from None
    if value is None:
        return Edits()
    if not isinstance(value, Mapping):
        raise ServiceError("invalid edits JSON", "edits must be a JSON object")
    return Edits.from_dict(value, strict=False)


# --- response builders -----------------------------------------------------------------------------------


def message_error(exc: ServiceError) -> ServiceError:
    """The old tool's wire form of an upload error: the message is the ``error`` (the code stays as ``code``)."""
    error = ServiceError(exc.message, exc.message, status=exc.status, **exc.extra)
    error.extra["code"] = exc.code
    return error


def template_json(template: Template) -> dict:
    return {
        "id": template.id.hex,
        "template_id": template.id.hex,
        "name": template.name,
        "class": template.image_class,
        "points_count": template.points_count,
        "points": template.points,
        "image_id": template.reference_image_id.hex if template.reference_image_id else None,
    }


def component_json(component: Component) -> dict:
    return {
        "id": component.number,
        "bbox": component.bbox or None,
        "area": component.area,
        "score": component.score,
        "name": component.name,
    }


def image_event(index: int, total: int, image: DatasetImage) -> dict:
    """The head of every per-image stream event (prewarm, apply_stream): ``{index, total, filename, image_id}``."""
    return {"index": index, "total": total, "filename": image.filename, "image_id": image.id.hex}


def point_summary(points: list[dict]) -> dict:
    """``{total, positive, negative}`` of a session's pixel points."""
    positive = sum(1 for point in points if point["positive"])
    return {"total": len(points), "positive": positive, "negative": len(points) - positive}
