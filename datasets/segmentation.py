"""The bridge between Django settings and the pure ``imaging`` segmenters and embedding cache.

Everything that segments (previews, jobs, the seed API) gets its segmenter and cache here. A dataset may pick
a checkpoint of SAM_MODELS_DIR (``Dataset.checkpoint``); each process keeps at most SAM_MAX_LOADED_MODELS
models loaded (LRU, in ``imaging.registry``), built lazily on first use and never at import. The embedding
cache is keyed by the segmenter's fingerprint, which names the family and size, so two models never share
embeddings.
"""

from __future__ import annotations

import threading

from django.conf import settings

from imaging.embedding_cache import EmbeddingCache
from imaging.registry import (
    CheckpointInfo,
    SegmenterConfig,
    find_checkpoint,
    get_segmenter,
    list_checkpoints,
    preload_segmenter,
    segmenter_status,
)
from imaging.segmenter import Segmenter

_cache_lock = threading.Lock()
_cache: EmbeddingCache | None = None
_cache_key: tuple | None = None


def available_models() -> list[CheckpointInfo]:
    """The checkpoints of SAM_MODELS_DIR, by name, each described from its tensors (unknown files included,
    with their ``error``)."""
    return list_checkpoints(settings.SAM_MODELS_DIR)


def site_checkpoint_name() -> str | None:
    """The file name of the site's model (SAM_CHECKPOINT, else the newest file of SAM_MODELS_DIR), or None
    when the site segments classically."""
    if settings.SAM_BACKEND == "classical":
        return None
    path = find_checkpoint(segmenter_config())
    return path.name if path is not None else None


def dataset_checkpoint_path(dataset) -> str | None:
    """The file a dataset's ``checkpoint`` names in SAM_MODELS_DIR, or None (blank, or the file is gone: the
    site's model is used, so a removed file never breaks a dataset)."""
    name = getattr(dataset, "checkpoint", "") or ""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = settings.SAM_MODELS_DIR / name
    return str(path) if path.is_file() else None


def segmenter_config(dataset=None) -> SegmenterConfig:
    """The site's segmenter config, or ``dataset``'s when it picked a checkpoint that is present (the
    classical backend stays classical: it is the site's choice not to run a model)."""
    checkpoint = settings.SAM_CHECKPOINT
    if dataset is not None and settings.SAM_BACKEND != "classical":
        checkpoint = dataset_checkpoint_path(dataset) or checkpoint
    return SegmenterConfig(
        backend=settings.SAM_BACKEND,
        checkpoint=checkpoint,
        models_dir=str(settings.SAM_MODELS_DIR),
        device=settings.SAM_DEVICE,
        max_loaded_models=settings.SAM_MAX_LOADED_MODELS,
    )


def app_segmenter(dataset=None) -> Segmenter:
    """The segmenter for ``dataset`` (its checkpoint, else the site's; None: the site's), from this process's
    LRU of loaded models. Raises SegmenterUnavailable for sam without weights, CheckpointError for a file
    that is unreadable or of no known family."""
    return get_segmenter(segmenter_config(dataset))


def start_preload() -> threading.Thread | None:
    """Load the app's segmenter in a background thread when ``SAM_PRELOAD`` is on (the web process calls
    this at start, so the first request does not pay for the load; ``/health`` shows its progress)."""
    if not settings.SAM_PRELOAD:
        return None
    return preload_segmenter(segmenter_config())


def segmenter_label(segmenter: Segmenter) -> str:
    """The human name of a segmenter's family and size ("SAM vit_b", "MobileSAM", "SAM 2.1 hiera_t"...)."""
    return getattr(segmenter, "label", None) or f"{segmenter.backend} {segmenter.model_type or ''}".strip()


def app_segmenter_status(dataset=None) -> dict:
    """Backend, family, size label, device, whether the model is loaded and any ``error``, without loading
    it (see ``imaging.registry.segmenter_status``)."""
    return segmenter_status(segmenter_config(dataset))


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


def embedding_for(*, sha256: str, rgb, segmenter: Segmenter | None = None) -> tuple:
    """The image's embedding from the shared cache, encoding it once on a miss: ``(Embedding, was_cached)``.

    Content-addressed by the original bytes' sha256 and the segmenter's fingerprint, so the same photo in two
    datasets (or two users' datasets) is encoded once, and a changed checkpoint never reuses stale features.
    ``segmenter`` is the one to encode with (a dataset's); None: the site's.
    """
    return embedding_cache().get_or_encode(sha256, rgb, segmenter or app_segmenter())
