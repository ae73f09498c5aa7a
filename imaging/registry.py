"""Choosing and holding the process's segmenters.

``get_segmenter(config)`` builds the segmenter for a configuration once per process, lazily (never at import:
loading SAM takes seconds and gigabytes) and thread-safely, and returns the same object afterwards. Models
of any family (SAM, SAM-HQ, MobileSAM, SAM 2: :mod:`imaging.families`, detected from the tensors) are kept in
a small per-process LRU keyed by (checkpoint, device): at most ``config.max_loaded_models`` (the setting
``SAM_MAX_LOADED_MODELS``, default 2) stay loaded; the least recently used one is dropped when another is
built (threads still holding it finish with it). The classical segmenter is free and not counted. After
``fork`` the child starts with an empty registry (``os.register_at_fork``): torch models and their thread
pools must not be shared across a fork, and a child should load its own copy when it first needs one.

``preload_segmenter(config)`` builds it in a background thread instead (the web process calls it at start,
so the first request does not pay for the load); :func:`segmenter_status` reports ``model_state``
``"loading"`` while that runs, then ``"loaded"``, or ``"error"`` with the reason.

Backend selection: ``"sam"`` needs a checkpoint (:class:`SegmenterUnavailable` otherwise); ``"classical"``
never loads weights; ``"auto"`` uses SAM when a checkpoint is found, else the classical segmenter.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imaging.classical import ClassicalSegmenter
from imaging.errors import CheckpointError, SegmenterUnavailable
from imaging.segmenter import Segmenter

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "sam", "classical")
_CHECKPOINT_SUFFIXES = (".pth", ".pt")


@dataclass(frozen=True)
class SegmenterConfig:
    """Which segmenter to use. ``backend``: auto|sam|classical; ``checkpoint``: an explicit SAM checkpoint
    file; ``models_dir``: a folder searched for the newest ``*.pth``/``*.pt`` when ``checkpoint`` is unset;
    ``device``: torch device for SAM (None → CUDA when available, else CPU); ``max_loaded_models``: the bound
    of the per-process LRU of loaded models (a per-dataset model choice is a config with its ``checkpoint``)."""

    backend: str = "auto"
    checkpoint: str | None = None
    models_dir: str | None = None
    device: str | None = None
    max_loaded_models: int = 2

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if int(self.max_loaded_models) < 1:
            raise ValueError(f"max_loaded_models must be at least 1, got {self.max_loaded_models!r}")


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint file, described from its tensors without building a model: ``family`` / ``size`` /
    ``label`` as :class:`imaging.families.FamilyInfo`, ``fingerprint`` as the segmenter's (the embedding
    cache key), or ``error`` (then the others are None) for an unreadable or unknown file."""

    path: Path
    name: str
    family: str | None
    size: str | None
    label: str | None
    fingerprint: str | None
    error: str | None = None


def describe_checkpoint(path: str | Path) -> CheckpointInfo:
    """:class:`CheckpointInfo` for one file (memory-mapped, shapes only; the fingerprint hashes the bytes
    once per file version). Never raises for a bad file: the error is in ``error``."""
    from imaging.families import peek_checkpoint, segmenter_fingerprint
    from imaging.sam import checkpoint_fingerprint

    p = Path(path)
    try:
        info = peek_checkpoint(p)
        digest = checkpoint_fingerprint(p)
    except CheckpointError as exc:
        return CheckpointInfo(p, p.name, None, None, None, None, error=str(exc))
    except OSError as exc:
        return CheckpointInfo(
            p, p.name, None, None, None, None, error=f"cannot read {p.name}: {exc.strerror}"
        )
    fingerprint = segmenter_fingerprint(info, digest)
    return CheckpointInfo(p, p.name, info.family, info.size, info.label, fingerprint)


def list_checkpoints(models_dir: str | Path | None) -> list[CheckpointInfo]:
    """Every ``*.pth``/``*.pt`` directly in ``models_dir``, by name, each described by
    :func:`describe_checkpoint` (unknown files included, with their ``error``). A missing folder is empty."""
    if not models_dir:
        return []
    try:
        files = sorted(
            (
                p
                for p in Path(models_dir).iterdir()
                if p.suffix.lower() in _CHECKPOINT_SUFFIXES and p.is_file()
            ),
            key=lambda p: p.name,
        )
    except OSError:
        return []
    return [describe_checkpoint(p) for p in files]


def find_checkpoint(config: SegmenterConfig) -> Path | None:
    """The explicit checkpoint path if set (returned even when missing, so loading reports it clearly),
    else the most recently modified ``*.pth``/``*.pt`` file directly in ``models_dir``, else None."""
    if config.checkpoint:
        return Path(config.checkpoint)
    if not config.models_dir:
        return None
    folder = Path(config.models_dir)
    try:
        files = [p for p in folder.iterdir() if p.suffix.lower() in _CHECKPOINT_SUFFIXES and p.is_file()]
    except OSError:
        return None
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


_lock = threading.Lock()
# Least recently used first.
_segmenters: OrderedDict[tuple[Any, ...], Segmenter] = OrderedDict()
# Per key: the reason the last build failed (cleared by a successful build), and the preload threads.
_errors: dict[tuple[Any, ...], str] = {}
_preloads: dict[tuple[Any, ...], threading.Thread] = {}
_state_lock = threading.Lock()

MODEL_STATES = ("not_loaded", "loading", "loaded", "error")


def _reset_after_fork() -> None:
    global _lock, _state_lock
    # The parent's lock may have been held by another thread at fork time; a fresh one is always free.
    _lock = threading.Lock()
    _state_lock = threading.Lock()
    _segmenters.clear()
    _errors.clear()
    _preloads.clear()  # the parent's threads do not exist in the child


os.register_at_fork(after_in_child=_reset_after_fork)


def _resolve(config: SegmenterConfig) -> tuple[str, Path | None]:
    """(backend actually used, checkpoint path or None)."""
    if config.backend == "classical":
        return "classical", None
    checkpoint = find_checkpoint(config)
    if config.backend == "sam":
        if checkpoint is None:
            raise SegmenterUnavailable(
                "SAM backend requested but no checkpoint found (set SAM_CHECKPOINT or put a .pth in models/)"
            )
        return "sam", checkpoint
    if checkpoint is not None and checkpoint.is_file():
        return "sam", checkpoint
    return "classical", None


def _key(backend: str, checkpoint: Path | None, device: str | None) -> tuple[Any, ...]:
    if backend == "classical":
        return ("classical",)
    assert checkpoint is not None
    return ("sam", str(checkpoint.resolve()), device or "auto")


def get_segmenter(config: SegmenterConfig) -> Segmenter:
    """The segmenter for ``config``, built on first use (thread-safe double-checked locking) and kept in
    the per-process LRU (see the module docstring).

    Raises :class:`SegmenterUnavailable` (backend "sam" without checkpoint) or :class:`CheckpointError`
    (unreadable or unknown checkpoint; with "auto" too, since silently falling back would hide a broken
    deployment).
    """
    backend, checkpoint = _resolve(config)
    key = _key(backend, checkpoint, config.device)
    segmenter = _segmenters.get(key)
    if segmenter is not None:
        if backend != "classical":
            with _lock:
                if key in _segmenters:
                    _segmenters.move_to_end(key)
        return segmenter
    with _lock:
        segmenter = _segmenters.get(key)
        if segmenter is None:
            try:
                if backend == "classical":
                    segmenter = ClassicalSegmenter()
                else:
                    # torch and the family's package are imported only when a model is actually used.
                    from imaging.families import load_segmenter

                    assert checkpoint is not None
                    segmenter = load_segmenter(checkpoint, device=config.device)
            except Exception as exc:
                with _state_lock:
                    _errors[key] = _load_error(exc, checkpoint)
                raise
            _segmenters[key] = segmenter
            with _state_lock:
                _errors.pop(key, None)
            _evict(keep=int(config.max_loaded_models))
    return segmenter


def _evict(*, keep: int) -> None:
    """Drop the least recently used models beyond ``keep`` (caller holds ``_lock``)."""
    models = [k for k in _segmenters if k[0] != "classical"]
    for key in models[: max(0, len(models) - keep)]:
        del _segmenters[key]


def loaded_models() -> list[str]:
    """Checkpoint paths of the models loaded in this process, least recently used first."""
    return [k[1] for k in _segmenters if k[0] != "classical"]


def _load_error(exc: BaseException, checkpoint: Path | None) -> str:
    """The reason a build failed, for /health: never the server's directory layout, only the file name."""
    text = str(exc) or type(exc).__name__
    if checkpoint is not None:
        for form in {str(checkpoint.resolve()), str(checkpoint)}:
            text = text.replace(form, checkpoint.name)
    return text


def preload_segmenter(config: SegmenterConfig) -> threading.Thread | None:
    """Build the segmenter for ``config`` in a daemon thread, once per process and configuration.

    Returns the thread (the running one when a preload is already under way), or None when there is
    nothing to start: the segmenter is already built, or the configuration cannot resolve (``"sam"``
    without checkpoint: reported as ``"error"`` by :func:`segmenter_status`). A failed load is kept as the
    ``"error"`` state; any later :func:`get_segmenter` call tries again.
    """
    try:
        backend, checkpoint = _resolve(config)
    except SegmenterUnavailable:
        return None
    key = _key(backend, checkpoint, config.device)
    with _state_lock:
        if key in _segmenters:
            return None
        running = _preloads.get(key)
        if running is not None and running.is_alive():
            return running

        def load() -> None:
            try:
                get_segmenter(config)
            except Exception:  # kept in _errors for /health; the next get_segmenter retries
                logger.exception("preloading the segmenter failed")

        thread = threading.Thread(target=load, name="samgen-preload", daemon=True)
        _preloads[key] = thread
    thread.start()
    return thread


def _model_state(key: tuple[Any, ...]) -> tuple[str, str | None]:
    with _state_lock:
        if key in _segmenters:
            return "loaded", None
        running = _preloads.get(key)
        if running is not None and running.is_alive():
            return "loading", None
        if key in _errors:
            return "error", _errors[key]
    return "not_loaded", None


def reset_segmenters() -> None:
    """Forget every built segmenter, load error and finished preload (tests)."""
    with _lock, _state_lock:
        _segmenters.clear()
        _errors.clear()
        _preloads.clear()


def segmenter_status(config: SegmenterConfig) -> dict[str, Any]:
    """What ``/health`` reports, without loading a model.

    ``{"backend": "sam"|"classical", "sam_loaded": bool, "model_state": "not_loaded"|"loading"|"loaded"|"error",
    "model_error": str|None, "model": "vit_b"|...|None, "family": "sam"|"sam_hq"|"mobile_sam"|"sam2"|"classical"|None,
    "label": "SAM vit_b"|...|None, "checkpoint": file name or None, "device": "cpu"|"cuda", "error": message or
    None}``. ``model`` (the size) and ``family`` come from the loaded model, else from the checkpoint's tensor
    shapes read through a memory map (no weights are read). An unreadable or unknown checkpoint never raises here:
    ``error`` says why (health is then degraded). A "sam" backend without checkpoint reports ``backend "sam"``,
    ``checkpoint None``, an ``error`` and ``model_state "error"`` (get_segmenter will raise). The classical
    backend has nothing to load: ``"loaded"``.
    """
    error = None
    try:
        backend, checkpoint = _resolve(config)
    except SegmenterUnavailable as exc:
        backend, checkpoint, error = "sam", None, str(exc)
    missing = error
    status: dict[str, Any] = {
        "backend": backend,
        "sam_loaded": False,
        "model_state": "loaded" if backend == "classical" else "error",
        "model_error": missing,
        "model": None,
        "family": "classical" if backend == "classical" else None,
        "label": ClassicalSegmenter.label if backend == "classical" else None,
        "checkpoint": checkpoint.name if checkpoint is not None else None,
        "device": "cpu",
        "error": error,
    }
    if backend != "sam" or checkpoint is None:
        return status
    key = _key(backend, checkpoint, config.device)
    status["model_state"], status["model_error"] = _model_state(key)
    loaded = _segmenters.get(key)
    if loaded is not None:
        status.update(
            sam_loaded=True,
            model=loaded.model_type,
            family=getattr(loaded, "family", "sam"),
            label=getattr(loaded, "label", None),
            device=loaded.device,
        )
        return status
    from imaging.families import peek_checkpoint
    from imaging.sam import resolve_device

    status["device"] = resolve_device(config.device)
    try:
        peeked = peek_checkpoint(checkpoint)
    except CheckpointError as exc:
        status.update(error=str(exc), model_state="error", model_error=str(exc))
        return status
    status.update(model=peeked.size, family=peeked.family, label=peeked.label)
    return status
