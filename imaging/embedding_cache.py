"""On-disk cache of image embeddings, keyed by (image sha256, segmenter fingerprint).

Content-addressed, so it is shared across datasets and users without leaking anything: you only hit an entry
by presenting the same image bytes. One file per entry::

    <sha256>-<16 hex digits of sha256(fingerprint)>.emb
    = MAGIC (8 bytes) | header length (uint32 LE) | JSON header | raw float16 feature bytes

The JSON header records the fingerprint, image hash, dtype, shape, original/input sizes and a CRC32 of the
payload. An embedding whose features are several named arrays (SAM-HQ, SAM 2) lists them in order as
``"arrays": [[name, shape], ...]`` instead of ``"shape"``, their bytes concatenated in the payload; single-array
entries (SAM 1, MobileSAM written by earlier versions) keep the original layout, so they still load. A
truncated, corrupt or mismatched file is detected, deleted and treated as a miss (callers then re-encode;
nothing is raised to them).

The files themselves (atomic writes, the LRU size bound, stale temp files, single-flight misses) are kept by
``imaging.file_store.BoundedFileStore``: the cache can exceed ``max_bytes`` by at most the entry just written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from imaging.file_store import BoundedFileStore, entry_payload, entry_prefix
from imaging.segmenter import Embedding, Segmenter

MAGIC = b"SAMEMB1\n"
_SUFFIX = ".emb"


def _fingerprint_tag(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()[:16]


class EmbeddingCache:
    """A size-bounded LRU embedding store in ``directory`` (created if missing). See the module docstring."""

    def __init__(self, directory: Path | str, *, max_bytes: int) -> None:
        self._store = BoundedFileStore(
            directory, max_bytes=max_bytes, suffix=_SUFFIX, label="embedding cache"
        )
        self.directory = self._store.directory
        self.max_bytes = self._store.max_bytes

    def path_for(self, sha256: str, fingerprint: str) -> Path:
        """The entry file for a key (it may not exist)."""
        return self._store.entry_path(sha256, _fingerprint_tag(fingerprint))

    def get(self, sha256: str, fingerprint: str) -> Embedding | None:
        """The cached embedding, or None on a miss. A corrupt entry is deleted and reported as a miss."""
        path = self.path_for(sha256, fingerprint)
        return self._store.load(path, lambda data: _parse(data, sha256.lower(), fingerprint))

    def put(self, sha256: str, embedding: Embedding) -> None:
        """Store ``embedding`` (features as float16) atomically, then evict down to ``max_bytes``."""
        self._store.write(self.path_for(sha256, embedding.fingerprint), _serialise(embedding, sha256.lower()))

    def get_or_encode(self, sha256: str, rgb: np.ndarray, segmenter: Segmenter) -> tuple[Embedding, bool]:
        """``(embedding, hit)``: the cached embedding, or a fresh ``segmenter.encode(rgb)`` stored for next time.

        Segmenters with ``cacheable = False`` are encoded directly with no disk access. Threads missing on the
        same image encode it once. Failing to write the cache (disk full, permissions) is logged, never raised.
        """
        if not getattr(segmenter, "cacheable", True):
            return segmenter.encode(rgb), False
        fingerprint = segmenter.fingerprint
        return self._store.get_or_make(
            self.path_for(sha256, fingerprint),
            parse=lambda data: _parse(data, sha256.lower(), fingerprint),
            make=lambda: _as_float16(segmenter.encode(rgb)),
            serialise=lambda embedding: _serialise(embedding, sha256.lower()),
        )

    def total_bytes(self) -> int:
        """Bytes used by complete entries."""
        return self._store.total_bytes()

    def count(self) -> int:
        """Number of complete entries."""
        return self._store.count()

    def clear(self) -> None:
        """Delete every entry (and leftover temp files)."""
        self._store.clear()


def _as_float16(embedding: Embedding) -> Embedding:
    """The embedding in its stored form (float16), handed out on the first run too, so a later hit predicts
    bit-identically."""
    arrays = embedding.arrays()
    if all(a.dtype == np.float16 for a in arrays.values()):
        return embedding
    if isinstance(embedding.features, np.ndarray):
        return dataclasses.replace(embedding, features=embedding.features.astype(np.float16))
    return dataclasses.replace(embedding, features={k: v.astype(np.float16) for k, v in arrays.items()})


def _serialise(embedding: Embedding, sha256: str) -> list[bytes]:
    header: dict[str, Any] = {
        "fingerprint": embedding.fingerprint,
        "sha256": sha256,
        "dtype": "float16",
    }
    if isinstance(embedding.features, np.ndarray):
        features = np.ascontiguousarray(embedding.features, dtype=np.float16)
        payload = features.tobytes()
        header["shape"] = list(features.shape)
    else:
        arrays = [(str(k), np.ascontiguousarray(v, dtype=np.float16)) for k, v in embedding.arrays().items()]
        payload = b"".join(a.tobytes() for _, a in arrays)
        header["arrays"] = [[name, list(a.shape)] for name, a in arrays]
    header["original_size"] = list(embedding.original_size)
    header["input_size"] = list(embedding.input_size)
    return [entry_prefix(MAGIC, header, payload), payload]


def _parse(data: bytearray, sha256: str, fingerprint: str) -> Embedding | None:
    """Decode an entry; None if anything is off (corrupt, truncated, or another key's file)."""
    framed = entry_payload(MAGIC, data)
    if framed is None:
        return None
    header, start = framed
    try:
        payload = memoryview(data)[start:]
        if "arrays" in header:
            layout = [(str(name), tuple(int(d) for d in shape)) for name, shape in header["arrays"]]
        else:
            layout = [("", tuple(int(d) for d in header["shape"]))]
        expected = sum(int(np.prod(shape)) * 2 for _, shape in layout)
        if (
            header.get("fingerprint") != fingerprint
            or header.get("sha256") != sha256
            or header.get("dtype") != "float16"
            or expected != len(payload)
        ):
            return None
        arrays: dict[str, np.ndarray] = {}
        offset = 0
        for name, shape in layout:
            count = int(np.prod(shape))
            arrays[name] = np.frombuffer(payload, dtype=np.float16, count=count, offset=offset).reshape(shape)
            offset += count * 2
        features: np.ndarray | dict[str, np.ndarray] = arrays[""] if "arrays" not in header else arrays
        original = tuple(int(v) for v in header["original_size"])
        input_size = tuple(int(v) for v in header["input_size"])
        if len(original) != 2 or len(input_size) != 2:
            return None
        return Embedding(
            features=features,
            original_size=(original[0], original[1]),
            input_size=(input_size[0], input_size[1]),
            fingerprint=fingerprint,
        )
    except (ValueError, KeyError, TypeError):
        return None
