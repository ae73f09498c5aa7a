"""Uploads: adding image files and one ZIP archive to a dataset (:func:`images_upload`).

Contract:

* Files are processed one at a time (read, hash, decode, thumbnail, write to storage), so memory holds at
  most one file's bytes and pixels, whatever the request size. Django has already spooled large parts to
  temporary files (FILE_UPLOAD_MAX_MEMORY_SIZE), and ZIP entries are read from the archive one by one.
* Per file: over MAX_UPLOAD_MB, undecodable (not an image, truncated, over MAX_IMAGE_MEGAPIXELS) or a
  duplicate (same sha256 as an image already in the dataset or earlier in the same upload) -> reported in
  ``UploadResult.rejected`` as ``"<code>: <detail>"``; the good files are kept.
* Per request: nothing given -> ServiceError("no_files", "provide images[] or zip"); more images than the
  dataset may hold (existing + submitted > MAX_IMAGES_PER_DATASET) -> ServiceError("max_images_exceeded",
  "max_images_exceeded:<n>/<max>"), nothing processed; a bad archive or a zip bomb -> ServiceError("zip_error",
  "zip_error:<reason>") and nothing is left behind (ZIP safety: ``archives``).
* Rows are inserted in one short transaction under the dataset's row lock (positions and the image limit are
  re-checked there). Files written to storage are deleted when that transaction, or any transaction the
  caller wrapped around it, rolls back (``datasets.services.files.delete_files_on_rollback``).

Modules: ``limits`` (settings-driven limits), ``sources`` (what is read: direct files, ZIP entries),
``archives`` (ZIP safety), ``service`` (the upload itself). Filename rules: ``datasets.services.names``;
stored-file lifetime: ``datasets.services.files``.
"""

# The filename rules are shared with dataset names and archives, so they live in datasets.services.names (a
# module that imports no service: names under uploads/ would make datasets.services.datasets import this
# package, which imports it back). The two an upload applies are part of this package's API.
from datasets.services.names import sanitize_filename, unique_filename
from datasets.services.uploads.limits import (
    image_capacity_check,
    max_image_pixels,
    max_upload_bytes,
    max_zip_entries,
    max_zip_uncompressed_bytes,
)
from datasets.services.uploads.service import RejectedFile, UploadResult, images_upload
from datasets.services.uploads.sources import UploadTooLarge, read_upload

__all__ = [
    "RejectedFile",
    "UploadResult",
    "UploadTooLarge",
    "image_capacity_check",
    "images_upload",
    "max_image_pixels",
    "max_upload_bytes",
    "max_zip_entries",
    "max_zip_uncompressed_bytes",
    "read_upload",
    "sanitize_filename",
    "unique_filename",
]
