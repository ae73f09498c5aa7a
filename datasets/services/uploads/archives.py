"""ZIP safety for uploads: one archive opened, checked from its central directory, and read entry by entry.

Entries are read by index into memory, never extracted by name, so ``../`` or absolute paths cannot reach the
filesystem; directories are flattened; ``__MACOSX``, hidden, symlink and non-image entries are skipped. Limits
come from the central directory before anything is inflated: entry count, total uncompressed image bytes
(MAX_ZIP_UNCOMPRESSED_MB) and a per-entry compression ratio; while reading, an entry that inflates past its
declared size (or stops short of it) aborts the whole upload. Every archive problem is
ServiceError("zip_error", "zip_error:<reason>").
"""

from __future__ import annotations

import contextlib
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from datasets.services.uploads.limits import (
    max_upload_bytes,
    max_zip_entries,
    max_zip_uncompressed_bytes,
    size_text,
)
from datasets.services.uploads.sources import UploadSource, file_too_large
from imaging.codecs import is_image_filename
from samsite.common.errors import ServiceError

#: An entry that declares more than this ratio of uncompressed to compressed bytes is treated as a zip bomb.
#: Real images are already compressed (PNG/JPEG/WebP ~1:1); uncompressed BMP/TIFF photos stay far below it.
ZIP_MAX_ENTRY_RATIO = 200
#: The ratio check applies to entries above this size (tiny flat images compress extremely well, harmlessly).
ZIP_RATIO_MIN_BYTES = 1024 * 1024
_READ_CHUNK = 1024 * 1024


def zip_error(reason: str, explanation: str) -> ServiceError:
    return ServiceError("zip_error", f"zip_error:{reason}", reason=reason, explanation=explanation)


@contextlib.contextmanager
def open_archive(archive: UploadedFile) -> Iterator[zipfile.ZipFile]:
    """The uploaded archive, open for the block; zip_error("bad_archive") when it is not a readable ZIP."""
    try:
        archive.seek(0)
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise zip_error("bad_archive", f"not a readable ZIP archive ({exc})") from None
    try:
        yield zf
    finally:
        zf.close()


def is_skipped_entry(info: zipfile.ZipInfo) -> bool:
    """Directories, ``__MACOSX``, hidden files, symlinks and anything not named like an image."""
    parts = [part for part in re.split(r"[/\\]", info.filename) if part]
    if info.is_dir() or not parts:
        return True
    # "." and ".." are path steps (harmless: names are flattened), other dot-names are hidden files.
    if any(part == "__MACOSX" or (part.startswith(".") and part not in (".", "..")) for part in parts):
        return True
    if stat.S_ISLNK(info.external_attr >> 16):
        return True
    return not is_image_filename(parts[-1])


def archive_sources(zf: zipfile.ZipFile) -> list[UploadSource]:
    """Validate the central directory (count, total size, ratios, encryption) and list the image entries."""
    infos = zf.infolist()
    if len(infos) > max_zip_entries():
        raise zip_error("too_many_entries", f"{len(infos)} entries; at most {max_zip_entries()} are allowed")
    images = [info for info in infos if not is_skipped_entry(info)]
    if not images:
        raise zip_error("no_images", "the archive contains no image files (png, jpg, bmp, tif, webp, gif)")
    total = sum(info.file_size for info in images)
    if total > max_zip_uncompressed_bytes():
        raise zip_error(
            "too_large",
            f"{size_text(total)} uncompressed exceeds the {settings.MAX_ZIP_UNCOMPRESSED_MB} MB limit",
        )
    for info in images:
        if info.flag_bits & 0x1:
            raise zip_error("encrypted", f"{info.filename!r} is encrypted")
        if info.file_size > ZIP_RATIO_MIN_BYTES and info.file_size > ZIP_MAX_ENTRY_RATIO * max(
            info.compress_size, 1
        ):
            raise zip_error(
                "compression_ratio",
                f"{info.filename!r} expands more than {ZIP_MAX_ENTRY_RATIO}x (a zip bomb?)",
            )
    return [_entry_source(zf, info) for info in images]


def _entry_source(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> UploadSource:
    def read() -> bytes:
        if info.file_size > max_upload_bytes():
            raise file_too_large(info.file_size)
        chunks, total = [], 0
        try:
            with zf.open(info) as handle:
                while chunk := handle.read(_READ_CHUNK):
                    total += len(chunk)
                    if total > info.file_size:  # inflating past the declared size: stop now
                        raise zip_error("size_mismatch", f"{info.filename!r} is larger than it declares")
                    chunks.append(chunk)
        except ServiceError:
            raise
        except NotImplementedError:
            raise zip_error(
                "unsupported_compression", f"{info.filename!r} uses an unsupported method"
            ) from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError) as exc:
            raise zip_error("corrupt_entry", f"{info.filename!r} cannot be read ({exc})") from None
        if total != info.file_size:
            raise zip_error("size_mismatch", f"{info.filename!r} is smaller than it declares")
        return b"".join(chunks)

    return UploadSource(original_name=info.filename, declared_size=info.file_size, read=read)
