"""Interactive previews (segment masks, edited variants) and embedding prewarm, all on the shared cache.

Every function gets the process's segmenter and embedding cache from :mod:`datasets.segmentation`, so a
preview after a prewarm, a job or an earlier preview of the same image content does not run the encoder
again. A SAM backend that is required but absent (or a broken checkpoint) raises
ServiceError("sam_model_not_loaded", status=503).

Large images: edit previews of an image whose longest side exceeds PREVIEW_MAX_SIDE run on a *working copy*,
the image downscaled to that side once and stored next to its thumbnail (``working/<dataset>/<stem>.png``),
so a preview never decodes the full original again (the variant comes back at the working size). Segment
previews use the cached embedding (SAM) or encode from the working copy (classical, whose embeddings are a
256 px image and are not stored), answering masks at the full image size either way.

No cross-user oracle: the embedding cache is shared by content, so "was it cached?" would tell a user that
someone else uploaded the same bytes. ``SegmentPreview.cached`` and ``PrewarmProgress.computed`` therefore
report the *owner's* view: cached only when this user's own previews or prewarms already used that
embedding (a per-user marker in the shared cache), whatever the disk cache holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from datasets.image_io import decode_dataset_image
from datasets.models import ComposeMode, DatasetImage
from datasets.segmentation import app_segmenter, embedding_cache, embedding_for
from datasets.services.files import working_copy_name
from imaging.codecs import DecodedImage, b64encode, decode_image, encode_image, encode_mask_png
from imaging.errors import CheckpointError, ImageDecodeError, SegmenterUnavailable
from imaging.pipeline import TemplateSpec, VariantResult, generate_for_image
from imaging.points import Point, denormalize, denormalize_box
from imaging.segmenter import Embedding, MaskCandidate, Segmenter
from samsite.common.errors import ServiceError

logger = logging.getLogger(__name__)

#: SAM answers at most three candidate masks per prompt (its multimask output).
MAX_CANDIDATES = 3
#: Embeddings kept in memory for back-to-back previews (a SAM embedding is 2 MB as float16).
RECENT_EMBEDDINGS = 8
#: How long a user's "I already used this embedding" marker lives (a lost marker only reports a miss).
SEEN_TTL_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class SegmentPreview:
    """Up to three candidate masks, best score first, at the image's size (``width`` x ``height``).
    ``cached`` is True when the embedding came from the cache and this image's owner had used it before."""

    candidates: list[MaskCandidate]
    width: int
    height: int
    cached: bool


@dataclass(frozen=True)
class PrewarmProgress:
    """One image of a prewarm: ``computed`` is True when the embedding was made ready for its owner now, False
    when this owner had already prepared it (or the backend keeps no embeddings, or the image could not be
    read: then ``error``). Whether another user's upload put it in the shared cache is never told."""

    index: int
    total: int
    image: DatasetImage
    computed: bool
    ms: int
    error: str = ""


@contextlib.contextmanager
def segmenter_errors() -> Iterator[None]:
    """Turn a missing or broken model into the API's 503 ``sam_model_not_loaded``."""
    try:
        yield
    except (SegmenterUnavailable, CheckpointError) as exc:
        raise ServiceError("sam_model_not_loaded", str(exc) or "SAM model not loaded", status=503) from None


class _RecentEmbeddings:
    """The last few embeddings used by previews, in memory, in front of the disk cache.

    A user placing points previews the same image many times in a row: this skips the disk read (SAM) or the
    decode and resize (classical, whose embeddings are not worth storing on disk). Keyed by the disk cache's
    directory, the image content and the segmenter fingerprint, so it can never serve another model's features.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, str], Embedding] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(sha256: str, segmenter: Segmenter) -> tuple[str, str, str]:
        return (str(settings.EMBED_CACHE_DIR), sha256, segmenter.fingerprint)

    def get(self, key: tuple[str, str, str]) -> Embedding | None:
        with self._lock:
            embedding = self._items.get(key)
            if embedding is not None:
                self._items.move_to_end(key)
            return embedding

    def put(self, key: tuple[str, str, str], embedding: Embedding) -> None:
        with self._lock:
            self._items[key] = embedding
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


recent_embeddings = _RecentEmbeddings(RECENT_EMBEDDINGS)


def _cached_embedding(sha256: str, segmenter: Segmenter) -> Embedding | None:
    """The embedding of this content without running the encoder: memory first, then the disk cache (None
    on a miss)."""
    key = recent_embeddings.key(sha256, segmenter)
    embedding = recent_embeddings.get(key)
    if embedding is None and segmenter.cacheable:
        embedding = embedding_cache().get(sha256, segmenter.fingerprint)
        if embedding is not None:
            recent_embeddings.put(key, embedding)
    return embedding


def content_embedding(
    *,
    sha256: str,
    size: tuple[int, int],
    segmenter: Segmenter,
    load: Callable[[], DecodedImage],
) -> tuple[Embedding, bool]:
    """The embedding of the image whose content hash is ``sha256`` and whether it was cached.

    Memory first, then the disk cache; only on a miss is ``load()`` called for the pixels to encode (the
    full image, or a smaller working copy: the embedding answers masks at ``size`` = ``(width, height)``
    either way). Every segmenting caller (dataset previews, the legacy single-image and batch endpoints)
    comes through here, so one image content is encoded at most once per model.
    """
    cached = _cached_embedding(sha256, segmenter)
    if cached is not None:
        return cached, True
    decoded = load()
    embedding, hit = embedding_for(sha256=sha256, rgb=decoded.rgb, segmenter=segmenter)
    width, height = size
    if (decoded.width, decoded.height) != size:
        # Encoded from a working copy: masks come back at the image's own size, as from a full encode.
        embedding = dataclasses.replace(embedding, original_size=(height, width))
    recent_embeddings.put(recent_embeddings.key(sha256, segmenter), embedding)
    return embedding, hit


def _embedding(
    image: DatasetImage, segmenter: Segmenter, decoded: DecodedImage | None = None
) -> tuple[Embedding, bool]:
    """The image's embedding and whether it was cached; decodes the stored file only on a miss.

    ``decoded`` is the full-resolution image when the caller already has it. A backend that stores no
    embeddings (classical) encodes from the working copy instead, so a large image is never decoded again.
    """

    def load() -> DecodedImage:
        if decoded is not None:
            return decoded
        return decode_dataset_image(image) if segmenter.cacheable else working_image(image)

    return content_embedding(
        sha256=image.sha256, size=(image.width, image.height), segmenter=segmenter, load=load
    )


def best_candidates(
    *,
    segmenter: Segmenter,
    embedding: Embedding,
    points: Sequence[Point],
    box: tuple[float, float, float, float] | None = None,
) -> list[MaskCandidate]:
    """The candidate masks for normalised ``points`` and/or a normalised ``box``, at the embedding's image
    size: SAM's multimask answer, best score first, at most MAX_CANDIDATES (ties keep the model's order)."""
    height, width = embedding.original_size
    coords, labels = denormalize(list(points), width, height)
    pixel_box = denormalize_box(box, width, height) if box is not None else None
    candidates = segmenter.predict(embedding, coords, labels, multimask=True, box=pixel_box)
    return sorted(candidates, key=lambda candidate: candidate.score, reverse=True)[:MAX_CANDIDATES]


def mask_candidates_json(candidates: Sequence[MaskCandidate]) -> list[dict]:
    """The wire form of candidate masks (REST segment and the legacy ``/sam/segment``), in the given order:
    ``{rank (from 1), score, area, bbox ([x0, y0, x1, y1] or None), mask_png (base64 PNG, no data: prefix)}``."""
    return [
        {
            "rank": rank,
            "score": float(candidate.score),
            "area": candidate.area,
            "bbox": list(candidate.bbox) if candidate.bbox is not None else None,
            "mask_png": b64encode(encode_mask_png(candidate.mask)),
        }
        for rank, candidate in enumerate(candidates, start=1)
    ]


# --- per-user view of the shared cache (no cross-user oracle) ---------------------------------------------


def _seen_key(image: DatasetImage, segmenter: Segmenter) -> str:
    owner_id = image.dataset.owner_id
    digest = hashlib.sha256(f"{owner_id}\x00{segmenter.fingerprint}\x00{image.sha256}".encode()).hexdigest()
    return f"embed-seen:{digest[:40]}"


def embedding_seen_by_owner(image: DatasetImage, segmenter: Segmenter) -> bool:
    """Whether this image's owner already used this embedding (previews, prewarm, jobs); marks it used from
    now on. What a user is told about the shared cache comes from this, never from the cache itself, so no
    answer reveals that another user uploaded the same bytes."""
    key = _seen_key(image, segmenter)
    return not cache.add(key, 1, SEEN_TTL_SECONDS)


# --- working copies of large images ------------------------------------------------------------------------


def working_size(width: int, height: int) -> tuple[int, int]:
    """``(w, h)`` of the working copy: the longest side at most PREVIEW_MAX_SIDE, aspect kept."""
    side = settings.PREVIEW_MAX_SIDE
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def working_image(image: DatasetImage) -> DecodedImage:
    """The pixels previews work on: the original when it fits PREVIEW_MAX_SIDE, else the stored working
    copy, made (from one full decode) on first use."""
    size = working_size(image.width, image.height)
    if size == (image.width, image.height):
        return decode_dataset_image(image)
    name = working_copy_name(image.file.name, image.dataset_id.hex)
    try:
        with default_storage.open(name, "rb") as handle:
            stored = decode_image(handle.read())
        if (stored.width, stored.height) == size:
            return DecodedImage(rgb=stored.rgb, is_grayscale=image.is_grayscale, format=stored.format)
    except (OSError, ImageDecodeError):
        pass  # missing (first use), unreadable or made for another PREVIEW_MAX_SIDE: make it again
    full = decode_dataset_image(image)
    rgb = cv2.resize(full.rgb, size, interpolation=cv2.INTER_AREA)
    _store_working_copy(name, encode_image(rgb, "png"))
    return DecodedImage(rgb=rgb, is_grayscale=full.is_grayscale, format=full.format)


def image_display_png(*, image: DatasetImage) -> bytes:
    """A PNG of ``image`` for pages whose browsers cannot draw the original (TIFF): the stored working copy
    (the image at most PREVIEW_MAX_SIDE on its longest side, made from one full decode on first use and kept
    with the image), so showing the image again never decodes the original. Page points are normalised, so
    the smaller size changes nothing they capture."""
    name = working_copy_name(image.file.name, image.dataset_id.hex)
    with contextlib.suppress(OSError), default_storage.open(name, "rb") as handle:
        return handle.read()
    fits = working_size(image.width, image.height) == (image.width, image.height)
    decoded = working_image(image)  # stores the copy when the image is larger than PREVIEW_MAX_SIDE
    data = encode_image(decoded.rgb, "png")
    if fits:
        _store_working_copy(name, data)
    return data


def _store_working_copy(name: str, data: bytes) -> None:
    try:
        default_storage.delete(name)
        saved = default_storage.save(name, ContentFile(data))
        if saved != name:  # a concurrent preview stored it meanwhile: keep one
            default_storage.delete(saved)
    except OSError:
        logger.warning("could not store the working copy %s", name, exc_info=True)


def segment_preview(
    *,
    image: DatasetImage,
    points: list[Point],
    box: tuple[float, float, float, float] | None = None,
) -> SegmentPreview:
    """Candidate masks for normalised ``points`` and/or a normalised ``box`` (``datasets.prompts.
    box_from_input``) on ``image`` with its dataset's model (at least one point or a box; ServiceError
    "no_points").

    Uses the cached embedding when there is one: a second preview of the same image never calls the encoder.
    """
    if not points and box is None:
        raise ServiceError("no_points", "at least one point or a box is required", field="points")
    with segmenter_errors():
        segmenter = app_segmenter(image.dataset)
        embedding, hit = _embedding(image, segmenter)
        cached = embedding_seen_by_owner(image, segmenter) and hit
        candidates = best_candidates(segmenter=segmenter, embedding=embedding, points=points, box=box)
    height, width = embedding.original_size
    return SegmentPreview(candidates=candidates, width=width, height=height, cached=cached)


def edit_preview(
    *, image: DatasetImage, specs: Sequence[TemplateSpec], compose: str = ComposeMode.STACK
) -> VariantResult | None:
    """The variant a job would produce for ``image`` with these templates and edits.

    Images larger than PREVIEW_MAX_SIDE are previewed on their working copy (the result has its size).
    ``compose="stack"`` layers every applicable template (in save order, ``TemplateSpec.order``); ``"each"``
    returns the first applicable template's own variant. Templates whose class filter excludes the image are skipped; None
    when no template applies (callers show the unedited image). ServiceError("invalid_compose") otherwise.
    """
    if compose not in ComposeMode.values:
        raise ServiceError("invalid_compose", "compose must be 'stack' or 'each'", field="compose")
    if not specs:
        return None
    with segmenter_errors():
        segmenter = app_segmenter(image.dataset)
        decoded = working_image(image)
        full = (decoded.height, decoded.width) == (image.height, image.width)
        embedding, _ = _embedding(image, segmenter, decoded if full else None)
        embedding_seen_by_owner(image, segmenter)
        if not full:
            # Same prompt, masks at the working size (SAM and classical scale points by original_size).
            embedding = dataclasses.replace(embedding, original_size=(decoded.height, decoded.width))
        results = generate_for_image(
            decoded, embedding, segmenter, list(specs), image_class=image.image_class, compose=str(compose)
        )
    return results[0] if results else None


def embeddings_prewarm(*, images: Iterable[DatasetImage]) -> Iterator[PrewarmProgress]:
    """Compute and cache the embedding of each image, yielding progress per image as it goes.

    Already cached images are skipped (``computed=False``); with a backend that keeps no embeddings (the
    classical one) every image is skipped at once. An unreadable stored image is reported, not raised.
    """
    images = list(images)
    total = len(images)
    with segmenter_errors():
        for index, image in enumerate(images):
            segmenter = app_segmenter(image.dataset)  # each dataset's own model (an LRU lookup)
            started = time.perf_counter()
            error = ""
            computed = False
            if segmenter.cacheable:
                try:
                    if _cached_embedding(image.sha256, segmenter) is None:
                        _embedding(image, segmenter, decode_dataset_image(image))
                    # Reported per owner: "computed" unless this user had already prepared it.
                    computed = not embedding_seen_by_owner(image, segmenter)
                except (ImageDecodeError, OSError) as exc:
                    error = str(exc) or exc.__class__.__name__
            ms = int((time.perf_counter() - started) * 1000)
            yield PrewarmProgress(
                index=index, total=total, image=image, computed=computed, ms=ms, error=error
            )
