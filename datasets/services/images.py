"""Image writes: uploads (files and one ZIP archive), the pass/fail class, deletion.

Upload contract (:func:`images_upload`):

* Files are processed one at a time (read, hash, decode, thumbnail, write to storage), so memory holds at
  most one file's bytes and pixels, whatever the request size. Django has already spooled large parts to
  temporary files (FILE_UPLOAD_MAX_MEMORY_SIZE), and ZIP entries are read from the archive one by one.
* Per file: over MAX_UPLOAD_MB, undecodable (not an image, truncated, over MAX_IMAGE_MEGAPIXELS) or a
  duplicate (same sha256 as an image already in the dataset or earlier in the same upload) -> reported in
  ``UploadResult.rejected`` as ``"<code>: <detail>"``; the good files are kept.
* Per request: nothing given -> ServiceError("no_files", "provide images[] or zip"); more images than the
  dataset may hold (existing + submitted > MAX_IMAGES_PER_DATASET) -> ServiceError("max_images_exceeded",
  "max_images_exceeded:<n>/<max>"), nothing processed; a bad archive or a zip bomb -> ServiceError("zip_error",
  "zip_error:<reason>") and nothing is left behind.
* ZIP: entries are read by index into memory, never extracted by name, so ``../`` or absolute paths cannot
  reach the filesystem; directories are flattened; ``__MACOSX``, hidden and non-image entries are skipped.
  Limits come from the central directory before anything is inflated: entry count, total uncompressed image
  bytes (MAX_ZIP_UNCOMPRESSED_MB) and a per-entry compression ratio; while reading, an entry that inflates past
  its declared size (or stops short of it) aborts the whole upload.
* Rows are inserted in one short transaction under the dataset's row lock (positions and the image limit are
  re-checked there). Files written to storage are deleted when that transaction, or any transaction the
  caller wrapped around it, rolls back.
"""

from __future__ import annotations

import contextlib
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Max

from datasets.image_io import stored_suffix
from datasets.models import Dataset, DatasetImage, Variant, image_class_from_input
from datasets.services.datasets import dataset_lock
from datasets.services.files import (
    delete_files_on_rollback,
    delete_stored_files,
    image_stored_names,
    rows_delete_with_files,
    variant_stored_names,
)
from datasets.services.names import sanitize_filename, unique_filename
from imaging.codecs import decode_image, encode_thumbnail_png, is_image_filename, sha256_hex
from imaging.errors import ImageDecodeError
from imaging.pipeline import classify_filename
from samsite.errors import ServiceError

THUMBNAIL_MAX_SIDE = 160
#: An entry that declares more than this ratio of uncompressed to compressed bytes is treated as a zip bomb.
#: Real images are already compressed (PNG/JPEG/WebP ~1:1); uncompressed BMP/TIFF photos stay far below it.
ZIP_MAX_ENTRY_RATIO = 200
#: The ratio check applies to entries above this size (tiny flat images compress extremely well, harmlessly).
ZIP_RATIO_MIN_BYTES = 1024 * 1024
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class RejectedFile:
    """A file of an upload that was not stored: its display name and ``"<code>: <detail>"``."""

    filename: str
    error: str


@dataclass
class UploadResult:
    """What an upload stored (in upload order) and what it refused, file by file."""

    created: list[DatasetImage] = field(default_factory=list)
    rejected: list[RejectedFile] = field(default_factory=list)


# --- limits (functions, so tests and settings overrides take effect per call) ------------------------------


def max_upload_bytes() -> int:
    """Per-file size limit (MAX_UPLOAD_MB), for direct uploads and ZIP entries alike."""
    return settings.MAX_UPLOAD_MB * 1024 * 1024


def max_zip_uncompressed_bytes() -> int:
    """Total uncompressed size of a ZIP's image entries (MAX_ZIP_UNCOMPRESSED_MB)."""
    return settings.MAX_ZIP_UNCOMPRESSED_MB * 1024 * 1024


def max_zip_entries() -> int:
    """Entries of any kind in one archive's central directory (generous: folders and sidecar files count)."""
    return max(1000, 4 * settings.MAX_IMAGES_PER_DATASET)


def max_image_pixels() -> int:
    return settings.MAX_IMAGE_MEGAPIXELS * 1_000_000


# --- sources: direct uploads and ZIP entries, read one at a time --------------------------------------------


class _Rejected(Exception):
    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


@dataclass
class _Source:
    original_name: str
    declared_size: int | None
    read: Callable[[], bytes]


def _size_text(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _too_large(size: int) -> _Rejected:
    return _Rejected(f"file_too_large: {_size_text(size)} exceeds the {settings.MAX_UPLOAD_MB} MB limit")


def _uploaded_source(upload: UploadedFile) -> _Source:
    def read() -> bytes:
        limit = max_upload_bytes()
        if upload.size is not None and upload.size > limit:
            raise _too_large(upload.size)
        chunks, total = [], 0
        for chunk in upload.chunks():
            total += len(chunk)
            if total > limit:
                raise _too_large(total)
            chunks.append(chunk)
        return b"".join(chunks)

    return _Source(original_name=str(upload.name or "upload"), declared_size=upload.size, read=read)


def _zip_error(reason: str, explanation: str) -> ServiceError:
    return ServiceError("zip_error", f"zip_error:{reason}", reason=reason, explanation=explanation)


@contextlib.contextmanager
def _open_archive(archive: UploadedFile) -> Iterator[zipfile.ZipFile]:
    try:
        archive.seek(0)
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise _zip_error("bad_archive", f"not a readable ZIP archive ({exc})") from None
    try:
        yield zf
    finally:
        zf.close()


def _is_skipped_entry(info: zipfile.ZipInfo) -> bool:
    parts = [part for part in re.split(r"[/\\]", info.filename) if part]
    if info.is_dir() or not parts:
        return True
    # "." and ".." are path steps (harmless: names are flattened), other dot-names are hidden files.
    if any(part == "__MACOSX" or (part.startswith(".") and part not in (".", "..")) for part in parts):
        return True
    if stat.S_ISLNK(info.external_attr >> 16):
        return True
    return not is_image_filename(parts[-1])


def _zip_sources(zf: zipfile.ZipFile) -> list[_Source]:
    """Validate the central directory (count, total size, ratios, encryption) and list the image entries."""
    infos = zf.infolist()
    if len(infos) > max_zip_entries():
        raise _zip_error("too_many_entries", f"{len(infos)} entries; at most {max_zip_entries()} are allowed")
    images = [info for info in infos if not _is_skipped_entry(info)]
    if not images:
        raise _zip_error("no_images", "the archive contains no image files (png, jpg, bmp, tif, webp, gif)")
    total = sum(info.file_size for info in images)
    if total > max_zip_uncompressed_bytes():
        raise _zip_error(
            "too_large",
            f"{_size_text(total)} uncompressed exceeds the {settings.MAX_ZIP_UNCOMPRESSED_MB} MB limit",
        )
    for info in images:
        if info.flag_bits & 0x1:
            raise _zip_error("encrypted", f"{info.filename!r} is encrypted")
        if info.file_size > ZIP_RATIO_MIN_BYTES and info.file_size > ZIP_MAX_ENTRY_RATIO * max(
            info.compress_size, 1
        ):
            raise _zip_error(
                "compression_ratio",
                f"{info.filename!r} expands more than {ZIP_MAX_ENTRY_RATIO}x (a zip bomb?)",
            )
    return [_entry_source(zf, info) for info in images]


def _entry_source(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Source:
    def read() -> bytes:
        if info.file_size > max_upload_bytes():
            raise _too_large(info.file_size)
        chunks, total = [], 0
        try:
            with zf.open(info) as handle:
                while chunk := handle.read(_READ_CHUNK):
                    total += len(chunk)
                    if total > info.file_size:  # inflating past the declared size: stop now
                        raise _zip_error("size_mismatch", f"{info.filename!r} is larger than it declares")
                    chunks.append(chunk)
        except ServiceError:
            raise
        except NotImplementedError:
            raise _zip_error(
                "unsupported_compression", f"{info.filename!r} uses an unsupported method"
            ) from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError) as exc:
            raise _zip_error("corrupt_entry", f"{info.filename!r} cannot be read ({exc})") from None
        if total != info.file_size:
            raise _zip_error("size_mismatch", f"{info.filename!r} is smaller than it declares")
        return b"".join(chunks)

    return _Source(original_name=info.filename, declared_size=info.file_size, read=read)


# --- files this upload stored --------------------------------------------------------------------------


class _StoredFiles:
    """The files this upload wrote so far, deleted at once when the upload fails."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, name: str) -> None:
        self.names.append(name)

    def delete_now(self, names: Sequence[str] | None = None) -> None:
        doomed = list(self.names if names is None else names)
        delete_stored_files(doomed)
        self.names = [name for name in self.names if name not in doomed]


# --- the service ------------------------------------------------------------------------------------------


def _check_capacity(would_reach: int) -> None:
    limit = settings.MAX_IMAGES_PER_DATASET
    if would_reach > limit:
        raise ServiceError(
            "max_images_exceeded", f"max_images_exceeded:{would_reach}/{limit}", count=would_reach, max=limit
        )


def images_upload(
    *, dataset: Dataset, files: Sequence[UploadedFile], archive: UploadedFile | None = None
) -> UploadResult:
    """Add ``files`` and the image entries of ``archive`` (a ZIP) to ``dataset``; see the module docstring.

    Returns the created images in upload order (positions continue after the dataset's last image, display
    names made unique as ``name-2.png``) and the rejected files with their reasons.
    """
    files = [upload for upload in files if upload is not None]
    if not files and archive is None:
        raise ServiceError("no_files", "provide images[] or zip", field="images")
    stored = _StoredFiles()
    try:
        with contextlib.ExitStack() as stack:
            sources = [_uploaded_source(upload) for upload in files]
            if archive is not None:
                zf = stack.enter_context(_open_archive(archive))
                sources.extend(_zip_sources(zf))
            _check_capacity(dataset.images.count() + len(sources))
            prepared, rejected = _prepare(dataset, sources, stored)
        with transaction.atomic():
            dataset_lock(dataset=dataset)
            created = _insert(dataset, prepared, rejected, stored)
            delete_files_on_rollback(stored.names)
    except BaseException:
        stored.delete_now()
        raise
    return UploadResult(created=created, rejected=rejected)


@dataclass
class _Analysed:
    """A source read, hashed, decoded and thumbnailed (pixels already dropped), or its rejection."""

    source: _Source
    display: str
    digest: str = ""
    data: bytes = b""
    width: int = 0
    height: int = 0
    is_grayscale: bool = False
    suffix: str = ""
    thumbnail: bytes = b""
    error: str = ""


def _analyse(source: _Source, known: Mapping[str, str]) -> _Analysed:
    """The CPU-bound part of an upload (no database, no storage writes).

    ``known`` (sha256 -> filename of the images already in the dataset or earlier in this upload) makes a
    duplicate a rejection before any decoding.
    ServiceError (a bad archive) propagates; per-file problems come back as ``error``.
    """
    result = _Analysed(source=source, display=sanitize_filename(source.original_name))
    try:
        data = source.read()
        result.digest = sha256_hex(data)
        if result.digest in known:
            raise _Rejected(f"duplicate: same content as {known[result.digest]}")
        try:
            decoded = decode_image(data, max_pixels=max_image_pixels())
        except ImageDecodeError as exc:
            raise _Rejected(f"invalid_image: {exc}") from None
    except _Rejected as exc:
        result.error = exc.error
        return result
    result.data = data
    result.width, result.height, result.is_grayscale = decoded.width, decoded.height, decoded.is_grayscale
    # The storage name's suffix follows the decoded format, never the user's extension.
    result.suffix = stored_suffix(decoded.format)
    result.thumbnail = encode_thumbnail_png(decoded.rgb, THUMBNAIL_MAX_SIDE)
    return result


def _prepare(
    dataset: Dataset, sources: list[_Source], stored: _StoredFiles
) -> tuple[list[DatasetImage], list[RejectedFile]]:
    """Analyse every source, store the good ones' files, and build their (unsaved) rows in upload order."""
    known = dict(dataset.images.values_list("sha256", "filename"))  # grows with this upload's files
    prepared: list[DatasetImage] = []
    rejected: list[RejectedFile] = []
    # One file at a time: a two-thread pipeline measured no faster on a busy 2-core host and let RSS creep
    # up (glibc per-thread malloc arenas), while this keeps memory flat at one file's bytes and pixels.
    for source in sources:
        result = _analyse(source, known)
        if result.error:
            rejected.append(RejectedFile(filename=result.display, error=result.error))
            continue
        known[result.digest] = result.display
        image = DatasetImage(
            dataset=dataset,
            original_filename=str(result.source.original_name).replace("\x00", "")[:255],
            filename=result.display,
            width=result.width,
            height=result.height,
            size_bytes=len(result.data),
            sha256=result.digest,
            is_grayscale=result.is_grayscale,
            image_class=classify_filename(result.display),
            position=0,
        )
        image.file.save(f"image{result.suffix}", ContentFile(result.data), save=False)
        stored.add(image.file.name)
        image.thumbnail.save("thumbnail.png", ContentFile(result.thumbnail), save=False)
        stored.add(image.thumbnail.name)
        prepared.append(image)
    return prepared, rejected


def _insert(
    dataset: Dataset, prepared: list[DatasetImage], rejected: list[RejectedFile], stored: _StoredFiles
) -> list[DatasetImage]:
    """Under the dataset lock: re-check duplicates and the limit, number and name the rows, insert them."""
    existing = list(dataset.images.values_list("sha256", "filename"))
    existing_shas = {digest for digest, _ in existing}
    accepted = []
    for image in prepared:
        if image.sha256 in existing_shas:  # a concurrent upload stored the same content meanwhile
            rejected.append(RejectedFile(image.filename, "duplicate: same content already in the dataset"))
            stored.delete_now([image.file.name, image.thumbnail.name])
        else:
            accepted.append(image)
    _check_capacity(len(existing) + len(accepted))
    taken = {name.lower() for _, name in existing}
    last = dataset.images.aggregate(last=Max("position"))["last"]
    position = 0 if last is None else last + 1
    for image in accepted:
        image.filename = unique_filename(image.filename, taken)
        image.position = position
        position += 1
    return DatasetImage.objects.bulk_create(accepted)


# --- other image writes -----------------------------------------------------------------------------------


def image_set_class(*, image: DatasetImage, image_class: object) -> DatasetImage:
    """Set the pass/fail class ("", "none" or None = no class). ServiceError("invalid_class") otherwise."""
    image.image_class = image_class_from_input(image_class)
    image.save(update_fields=["image_class", "updated"])
    return image


def image_delete(*, image: DatasetImage) -> None:
    """Delete the image with its variants (job items go with it); its stored files go after commit."""
    with transaction.atomic():
        owned = [*image_stored_names([image]), *variant_stored_names(Variant.objects.filter(image=image))]
        rows_delete_with_files(image, owned)
