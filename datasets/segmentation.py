"""The bridge between Django settings and the pure ``imaging`` segmenters and embedding cache.

Everything that segments (previews, jobs, the seed API) gets its segmenter and cache here, so one process
holds one model, built lazily on first use and never at import.
"""

from __future__ import annotations

import threading

from django.conf import settings

from imaging.embedding_cache import EmbeddingCache
from imaging.registry import SegmenterConfig, get_segmenter, preload_segmenter, segmenter_status
from imaging.segmenter import Segmenter

_cache_lock = threading.Lock()
_cache: EmbeddingCache | None = None
_cache_key: tuple | None = None


def segmenter_config() -> SegmenterConfig:
    return SegmenterConfig(
        backend=settings.SAM_BACKEND,
        checkpoint=settings.SAM_CHECKPOINT,
        models_dir=str(settings.SAM_MODELS_DIR),
        device=settings.SAM_DEVICE,
    )


def app_segmenter() -> Segmenter:
    """The process-wide segmenter for the current settings (raises SegmenterUnavailable for sam without weights)."""
    return get_segmenter(segmenter_config())


def start_preload() -> threading.Thread | None:
    """Load the app's segmenter in a background thread when ``SAM_PRELOAD`` is on (the web process calls
    this at start, so the first request does not pay for the load; ``/health`` shows its progress)."""
    if not settings.SAM_PRELOAD:
        return None
    return preload_segmenter(segmenter_config())


def app_segmenter_status() -> dict:
    """Backend, model, device and whether the model is loaded, without loading it."""
    return segmenter_status(segmenter_config())


def embedding_cache() -> EmbeddingCache:
    """The shared on-disk embedding cache (content-addressed, so sharing it across users leaks nothing)."""
    global _cache, _cache_key
    key = (str(settings.EMBED_CACHE_DIR), settings.EMBED_CACHE_MB)
    with _cache_lock:
        if _cache is None or _cache_key != key:
            settings.EMBED_CACHE_DIR.mkdir(parents=True, exist_ok=True)
            _cache = EmbeddingCache(settings.EMBED_CACHE_DIR, max_bytes=settings.EMBED_CACHE_MB * 1024 * 1024)
            _cache_key = key
        return _cache


def embedding_for(*, sha256: str, rgb) -> tuple:
    """The image's embedding from the shared cache, encoding it once on a miss: ``(Embedding, was_cached)``.

    Content-addressed by the original bytes' sha256 and the segmenter's fingerprint, so the same photo in two
    datasets (or two users' datasets) is encoded once, and a changed checkpoint never reuses stale features.
    """
    return embedding_cache().get_or_encode(sha256, rgb, app_segmenter())
