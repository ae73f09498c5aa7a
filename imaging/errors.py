"""Exceptions raised by the imaging package.

Every error the package raises on bad *input* (bytes, edit values, points, checkpoints) derives from
:class:`ImagingError`, so the web layer can map the whole family to a 400 (or 503 for
:class:`SegmenterUnavailable`) with the message shown to the user as is. Messages are short, human and
never contain stack traces or file contents.
"""

from __future__ import annotations


class ImagingError(Exception):
    """Base class of every error raised by :mod:`imaging` on bad input or missing resources."""


class ImageDecodeError(ImagingError):
    """The bytes are not a decodable image (not an image, truncated, too large, zero-size, ...)."""


class EditValidationError(ImagingError):
    """An edit value is invalid. ``field`` is the offending key, and the message names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class PointValidationError(ImagingError):
    """A point prompt is invalid. ``index`` is the position of the point in the submitted list."""

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        super().__init__(f"point {index}: {message}")


class BoxValidationError(ImagingError):
    """A box prompt is invalid (not four numbers in [0, 1], or of zero width or height)."""


class SegmenterUnavailable(ImagingError):
    """The SAM backend was required (``backend="sam"``) but no checkpoint could be found."""


class CheckpointError(ImagingError):
    """A checkpoint file is missing, truncated, corrupt or not a SAM checkpoint."""
