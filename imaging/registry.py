"""Choosing and holding the process-wide segmenter.

``get_segmenter(config)`` builds the segmenter for a configuration once per process, lazily (never at import:
loading SAM takes seconds and gigabytes) and thread-safely, and returns the same object afterwards. After
``fork`` the child starts with an empty registry (``os.register_at_fork``): torch models and their thread
pools must not be shared across a fork, and a child should load its own copy when it first needs one.

Backend selection: ``"sam"`` needs a checkpoint (:class:`SegmenterUnavailable` otherwise); ``"classical"``
never loads weights; ``"auto"`` uses SAM when a checkpoint is found, else the classical segmenter.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imaging.classical import ClassicalSegmenter
from imaging.errors import SegmenterUnavailable
from imaging.segmenter import Segmenter

BACKENDS = ("auto", "sam", "classical")
_CHECKPOINT_SUFFIXES = (".pth", ".pt")


@dataclass(frozen=True)
class SegmenterConfig:
    """Which segmenter to use. ``backend``: auto|sam|classical; ``checkpoint``: an explicit SAM checkpoint
    file; ``models_dir``: a folder searched for the newest ``*.pth``/``*.pt`` when ``checkpoint`` is unset;
    ``device``: torch device for SAM (None → CUDA when available, else CPU)."""

    backend: str = "auto"
    checkpoint: str | None = None
    models_dir: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


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
_segmenters: dict[tuple[Any, ...], Segmenter] = {}


def _reset_after_fork() -> None:
    global _lock
    # The parent's lock may have been held by another thread at fork time; a fresh one is always free.
    _lock = threading.Lock()
    _segmenters.clear()


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
    """The process-wide segmenter for ``config``, built on first use (thread-safe double-checked locking).

    Raises :class:`SegmenterUnavailable` (backend "sam" without checkpoint) or :class:`CheckpointError`
    (unreadable checkpoint; with "auto" too, since silently falling back would hide a broken deployment).
    """
    backend, checkpoint = _resolve(config)
    key = _key(backend, checkpoint, config.device)
    segmenter = _segmenters.get(key)
    if segmenter is not None:
        return segmenter
    with _lock:
        segmenter = _segmenters.get(key)
        if segmenter is None:
            if backend == "classical":
                segmenter = ClassicalSegmenter()
            else:
                from imaging.sam import SamSegmenter  # torch is imported only when SAM is actually used

                assert checkpoint is not None
                segmenter = SamSegmenter(checkpoint, device=config.device)
            _segmenters[key] = segmenter
    return segmenter


def reset_segmenters() -> None:
    """Forget every built segmenter (tests)."""
    with _lock:
        _segmenters.clear()


def segmenter_status(config: SegmenterConfig) -> dict[str, Any]:
    """What ``/health`` reports, without loading a model.

    ``{"backend": "sam"|"classical", "sam_loaded": bool, "model": "vit_b"|...|None, "checkpoint": file name or
    None, "device": "cpu"|"cuda"}``. ``model`` comes from the loaded model, else from the checkpoint's tensor
    shapes read through a memory map (no weights are read). A "sam" backend without checkpoint reports
    ``backend "sam"``, ``checkpoint None`` (get_segmenter will raise).
    """
    try:
        backend, checkpoint = _resolve(config)
    except SegmenterUnavailable:
        backend, checkpoint = "sam", None
    status: dict[str, Any] = {
        "backend": backend,
        "sam_loaded": False,
        "model": None,
        "checkpoint": checkpoint.name if checkpoint is not None else None,
        "device": "cpu",
    }
    if backend != "sam" or checkpoint is None:
        return status
    loaded = _segmenters.get(_key(backend, checkpoint, config.device))
    if loaded is not None:
        status.update(sam_loaded=True, model=loaded.model_type, device=loaded.device)
        return status
    from imaging.sam import peek_sam_config, resolve_device

    status["device"] = resolve_device(config.device)
    peeked = peek_sam_config(checkpoint)
    status["model"] = peeked.model_type if peeked is not None else None
    return status
