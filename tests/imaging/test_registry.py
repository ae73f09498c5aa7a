"""Segmenter selection, the per-process singleton and the health status."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
from unittest import mock

import pytest

from imaging import registry
from imaging.classical import ClassicalSegmenter
from imaging.errors import CheckpointError, SegmenterUnavailable
from imaging.registry import (
    SegmenterConfig,
    find_checkpoint,
    get_segmenter,
    reset_segmenters,
    segmenter_status,
)


@pytest.fixture(autouse=True)
def _clean_registry():
    reset_segmenters()
    yield
    reset_segmenters()


def test_auto_without_checkpoint_is_classical(tmp_path):
    config = SegmenterConfig(backend="auto", models_dir=str(tmp_path))
    segmenter = get_segmenter(config)
    assert isinstance(segmenter, ClassicalSegmenter)
    assert get_segmenter(config) is segmenter
    assert get_segmenter(SegmenterConfig(backend="classical")) is segmenter  # one classical per process
    assert segmenter_status(config) == {
        "backend": "classical",
        "sam_loaded": False,
        "model_state": "loaded",
        "model_error": None,
        "model": None,
        "family": "classical",
        "label": "Classical (GrabCut)",
        "checkpoint": None,
        "device": "cpu",
        "error": None,
    }


def test_sam_without_checkpoint_is_unavailable(tmp_path):
    config = SegmenterConfig(backend="sam", models_dir=str(tmp_path / "empty"))
    with pytest.raises(SegmenterUnavailable):
        get_segmenter(config)
    status = segmenter_status(config)
    assert status["backend"] == "sam" and status["checkpoint"] is None and status["sam_loaded"] is False


def test_explicit_missing_checkpoint_errors_for_sam(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        get_segmenter(SegmenterConfig(backend="sam", checkpoint=str(tmp_path / "gone.pth")))


def test_unknown_backend():
    with pytest.raises(ValueError):
        SegmenterConfig(backend="magic")


def test_newest_checkpoint_in_models_dir(tmp_path, tiny_sam_checkpoint):
    models = tmp_path / "models"
    models.mkdir()
    old = models / "old.pth"
    new = models / "new.pt"
    shutil.copy(tiny_sam_checkpoint, old)
    shutil.copy(tiny_sam_checkpoint, new)
    (models / "notes.txt").write_text("ignored")
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))
    os.utime(new, ns=(2_000_000_000, 2_000_000_000))
    assert find_checkpoint(SegmenterConfig(models_dir=str(models))) == new
    explicit = SegmenterConfig(checkpoint=str(old), models_dir=str(models))
    assert find_checkpoint(explicit) == old
    assert find_checkpoint(SegmenterConfig()) is None


def test_auto_with_checkpoint_loads_sam_lazily_once(tmp_path, tiny_sam_checkpoint):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_sam_checkpoint, models / "sam_tiny.pth")
    config = SegmenterConfig(backend="auto", models_dir=str(models), device="cpu")
    status = segmenter_status(config)
    # Reported without loading: the model type comes from the tensors' shapes through a memory map.
    assert status == {
        "backend": "sam",
        "sam_loaded": False,
        "model_state": "not_loaded",
        "model_error": None,
        "model": "custom",
        "family": "sam",
        "label": "SAM custom",
        "checkpoint": "sam_tiny.pth",
        "device": "cpu",
        "error": None,
    }
    assert not registry._segmenters

    from imaging import sam

    built = []
    real_init = sam.SamSegmenter.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    results = []
    with mock.patch.object(sam.SamSegmenter, "__init__", counting_init):
        threads = [threading.Thread(target=lambda: results.append(get_segmenter(config))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(built) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)
    assert results[0].backend == "sam"
    assert segmenter_status(config)["sam_loaded"] is True
    reset_segmenters()
    assert segmenter_status(config)["sam_loaded"] is False


def _child_registry_size(queue) -> None:
    queue.put(len(registry._segmenters))


def test_registry_is_empty_after_fork(tmp_path):
    get_segmenter(SegmenterConfig(backend="classical"))
    assert len(registry._segmenters) == 1
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=_child_registry_size, args=(queue,))
    process.start()
    process.join(60)
    assert queue.get(timeout=5) == 0
    assert len(registry._segmenters) == 1


def test_importing_the_registry_loads_no_model():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, imaging.registry, imaging.pipeline, imaging.embedding_cache, imaging.edits;"
        "print('torch' in sys.modules, 'django' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.split() == ["False", "False"]
