"""Name rules: the one home for cleaning a name a user gave and for keeping names unique.

* :func:`visible_text` is the character rule every user-given name shares: NFC, any whitespace character
  becomes a plain space, other control, format, private-use and unassigned characters are dropped.
* :func:`clean_display_name` validates a name shown in the UI (a dataset's or template's name, a label): a
  separate concept from a file name (it may hold ``/`` or ``:``, it is refused rather than repaired when blank
  or too long), with the same character rule.
* :func:`sanitize_filename` makes the display filename of an uploaded image; :func:`safe_name_part` makes a
  part of a name inside a download or export archive (only word characters, dots, dashes and spaces, so an
  unpacked archive is safe on any filesystem and in a shell); :func:`header_filename` and :func:`name_slug`
  make the ASCII names of a download.
* :func:`unique_filename` is the one suffix style for a name already taken, in uploads and archives alike:
  ``name-2.ext``, ``name-3.ext``... compared case-insensitively. ``-n`` rather than `` (n)``: it passes
  :func:`safe_name_part` unchanged, so an image uploaded as ``photo-2.png`` keeps that stem in every archive.
"""

from __future__ import annotations

import re
import unicodedata

from django.utils.text import slugify

from datasets.models import Dataset
from samsite.common.errors import ServiceError

#: Display filenames are cut to this many characters (the extension is kept), leaving room for "-n".
FILENAME_MAX_LENGTH = 150
#: Parts of archive entry names are cut to this many characters.
NAME_PART_MAX_LENGTH = 120

#: Dataset names (and, by default, every display name) are at most this long.
DISPLAY_NAME_MAX_LENGTH = Dataset._meta.get_field("name").max_length

_UNSAFE_IN_NAME_PART = re.compile(r"[^\w.\- ]+", re.UNICODE)


def visible_text(text: str) -> str:
    """``text`` in NFC with every whitespace character as a plain space and every other control, format,
    private-use or unassigned character removed (bidi overrides, NUL, escape sequences...)."""
    text = unicodedata.normalize("NFC", text)
    return "".join(
        " " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )


def clean_display_name(
    value: object, *, field: str = "name", max_length: int = DISPLAY_NAME_MAX_LENGTH
) -> str:
    """A user-chosen name, :func:`visible_text` without surrounding space; ServiceError("invalid_name")
    when it is not a string, blank or too long (the message names the limit, ``field`` the input)."""
    if not isinstance(value, str):
        raise ServiceError("invalid_name", f"{field} must be a string", field=field)
    cleaned = visible_text(value).strip()
    if not cleaned:
        raise ServiceError("invalid_name", f"{field} must not be blank", field=field)
    if len(cleaned) > max_length:
        raise ServiceError("invalid_name", f"{field} is longer than {max_length} characters", field=field)
    return cleaned


def sanitize_filename(name: str, *, max_length: int = FILENAME_MAX_LENGTH) -> str:
    """A display filename: the last path component, :func:`visible_text`, spaces collapsed, no leading dots,
    cut to ``max_length`` characters keeping the extension; "image" when nothing is left.
    """
    base = visible_text(re.split(r"[/\\]", str(name))[-1])
    stem, suffix = split_suffix(re.sub(r" +", " ", base).strip().rstrip(". "))
    stem = stem.lstrip(". ").rstrip() or "image"
    return stem[: max(1, max_length - len(suffix))].rstrip() + suffix


def safe_name_part(name: str, fallback: str = "file") -> str:
    """A part of an archive entry name: :func:`visible_text`, every run of characters other than word
    characters, dots, dashes and spaces replaced by ``_`` (path separators included), no leading or trailing
    dots, underscores or spaces, cut to NAME_PART_MAX_LENGTH; ``fallback`` when nothing is left."""
    cleaned = _UNSAFE_IN_NAME_PART.sub("_", visible_text(name)).strip(" ._")
    return cleaned[:NAME_PART_MAX_LENGTH] or fallback


def unique_filename(name: str, taken: set[str]) -> str:
    """``name``, or ``stem-n.ext`` with the smallest free n >= 2; ``taken`` holds lower-cased names and is
    updated. Case-insensitive, so the names also stay distinct in a ZIP unpacked on macOS or Windows."""
    return _unique_name(*split_suffix(name), taken)


def unique_entry_name(base: str, ext: str, taken: set[str]) -> str:
    """:func:`unique_filename` of ``<base>.<ext>`` (an archive entry: ``base`` may hold folders, ``ext`` is
    kept whole); with ``ext=""``, of ``base`` alone: a stem unique whatever extension its files get (an
    export names an image's label and class-mask files by its stem)."""
    return _unique_name(base, f".{ext}" if ext else "", taken)


def _unique_name(stem: str, suffix: str, taken: set[str]) -> str:
    candidate = stem + suffix
    number = 2
    while candidate.lower() in taken:
        candidate = f"{stem}-{number}{suffix}"
        number += 1
    taken.add(candidate.lower())
    return candidate


def split_suffix(name: str) -> tuple[str, str]:
    """``("photo", ".png")``; an extension is a final dot and 1 to 10 characters without spaces."""
    dot = name.rfind(".")
    suffix = name[dot:] if dot >= 0 and 2 <= len(name) - dot <= 11 and " " not in name[dot:] else ""
    return (name[:dot], suffix) if suffix else (name, "")


def header_filename(name: str) -> str:
    """``name`` as the ASCII ``filename`` of a Content-Disposition header: other characters and quotes
    become ``_``."""
    return name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")


def name_slug(name: str, *, max_length: int, fallback: str) -> str:
    """A lower-case ASCII slug of ``name`` (``"Holiday photos" -> "holiday-photos"``), at most ``max_length``
    characters, ``fallback`` when nothing is left."""
    return slugify(name)[:max_length].strip("-") or fallback
