"""Interactive previews (segment masks, edited variants) and embedding prewarm, all on the shared cache.

Every function gets the process's segmenter and embedding cache from :mod:`datasets.segmentation`, so a
preview after a prewarm, a job or an earlier preview of the same image content does not run the encoder
again. A SAM backend that is required but absent (or a broken checkpoint) raises
ServiceError("sam_model_not_loaded", status=503).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from django.conf import settings

from datasets.image_io import decode_stored_image
from datasets.models import ComposeMode, DatasetImage
from datasets.segmentation import app_segmenter, embedding_cache, embedding_for
from imaging.codecs import DecodedImage
from imaging.errors import CheckpointError, ImageDecodeError, SegmenterUnavailable
from imaging.pipeline import TemplateSpec, VariantResult, generate_for_image
from imaging.points import Point, denormalize
from imaging.segmenter import Embedding, MaskCandidate, Segmenter
from samsite.errors import ServiceError

MAX_CANDIDATES = 3
#: Embeddings kept in memory for back-to-back previews (a SAM embedding is 2 MB as float16).
RECENT_EMBEDDINGS = 8


@dataclass(frozen=True)
class SegmentPreview:
    """Up to three candidate masks, best score first, at the image's size (``width`` x ``height``).
    ``cached`` is True when the embedding came from the cache (no encoder call)."""

    candidates: list[MaskCandidate]
    width: int
    height: int
    cached: bool


@dataclass(frozen=True)
class PrewarmProgress:
    """One image of a prewarm: ``computed`` is True when the encoder ran, False when the embedding was
    already cached (or the backend keeps no embeddings, or the image could not be read: then ``error``)."""

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


def _cached_embedding(image: DatasetImage, segmenter: Segmenter) -> Embedding | None:
    """The embedding without running the encoder: memory first, then the disk cache (None on a miss)."""
    key = recent_embeddings.key(image.sha256, segmenter)
    embedding = recent_embeddings.get(key)
    if embedding is None and segmenter.cacheable:
        embedding = embedding_cache().get(image.sha256, segmenter.fingerprint)
        if embedding is not None:
            recent_embeddings.put(key, embedding)
    return embedding


def _embedding(
    image: DatasetImage, segmenter: Segmenter, decoded: DecodedImage | None = None
) -> tuple[Embedding, bool]:
    """The image's embedding and whether it was cached; decodes the stored file only on a miss."""
    cached = _cached_embedding(image, segmenter)
    if cached is not None:
        return cached, True
    if decoded is None:
        decoded = decode_stored_image(image.file)
    embedding, hit = embedding_for(sha256=image.sha256, rgb=decoded.rgb)
    recent_embeddings.put(recent_embeddings.key(image.sha256, segmenter), embedding)
    return embedding, hit


def segment_preview(*, image: DatasetImage, points: list[Point]) -> SegmentPreview:
    """Candidate masks for normalised ``points`` on ``image`` (at least one point; ServiceError "no_points").

    Uses the cached embedding when there is one: a second preview of the same image never calls the encoder.
    """
    if not points:
        raise ServiceError("no_points", "at least one point is required", field="points")
    with segmenter_errors():
        segmenter = app_segmenter()
        embedding, cached = _embedding(image, segmenter)
        height, width = embedding.original_size
        coords, labels = denormalize(points, width, height)
        candidates = segmenter.predict(embedding, coords, labels, multimask=True)
    best_first = sorted(candidates, key=lambda candidate: candidate.score, reverse=True)[:MAX_CANDIDATES]
    return SegmentPreview(candidates=best_first, width=width, height=height, cached=cached)


def edit_preview(
    *, image: DatasetImage, specs: Sequence[TemplateSpec], compose: str = ComposeMode.STACK
) -> VariantResult | None:
    """The variant a job would produce for ``image`` with these templates and edits.

    ``compose="stack"`` layers every applicable template (in save order, ``TemplateSpec.order``); ``"each"``
    returns the first applicable template's own variant. Templates whose class filter excludes the image are skipped; None
    when no template applies (callers show the unedited image). ServiceError("invalid_compose") otherwise.
    """
    if compose not in ComposeMode.values:
        raise ServiceError("invalid_compose", "compose must be 'stack' or 'each'", field="compose")
    if not specs:
        return None
    with segmenter_errors():
        segmenter = app_segmenter()
        decoded = decode_stored_image(image.file)
        embedding, _ = _embedding(image, segmenter, decoded)
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
        segmenter = app_segmenter()
        for index, image in enumerate(images):
            started = time.perf_counter()
            error = ""
            computed = False
            if segmenter.cacheable and _cached_embedding(image, segmenter) is None:
                try:
                    _, cached = _embedding(image, segmenter, decode_stored_image(image.file))
                    computed = not cached
                except (ImageDecodeError, OSError) as exc:
                    error = str(exc) or exc.__class__.__name__
            ms = int((time.perf_counter() - started) * 1000)
            yield PrewarmProgress(
                index=index, total=total, image=image, computed=computed, ms=ms, error=error
            )
