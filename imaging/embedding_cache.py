"""On-disk cache of image embeddings, keyed by (image sha256, segmenter fingerprint).

Content-addressed, so it is shared across datasets and users without leaking anything: you only hit an entry
by presenting the same image bytes. One file per entry::

    <sha256>-<16 hex digits of sha256(fingerprint)>.emb
    = MAGIC (8 bytes) | header length (uint32 LE) | JSON header | raw float16 feature bytes

The JSON header records the fingerprint, image hash, dtype, shape, original/input sizes and a CRC32 of the
payload. An embedding whose features are several named arrays (SAM-HQ, SAM 2) lists them in order as
``"arrays": [[name, shape], ...]`` instead of ``"shape"``, their bytes concatenated in the payload; single-array
entries (SAM 1, MobileSAM written by earlier versions) keep the original layout, so they still load, so a truncated, corrupt or mismatched file is detected, deleted and treated as a miss (callers then
re-encode; nothing is raised to them).

Concurrency: writers write a unique temp file in the same directory and ``os.replace`` it into place (atomic
on POSIX), so readers in any thread or process see either no entry or a complete one. Eviction tolerates
entries vanishing underneath it. Size bound: after each ``put`` the oldest entries (by mtime, refreshed on
every hit: LRU) are deleted until the total is under ``max_bytes``; the entry just written is never evicted
by its own put, so the cache can exceed the bound by at most one entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from imaging.segmenter import Embedding, Segmenter

logger = logging.getLogger(__name__)

MAGIC = b"SAMEMB1\n"
_SUFFIX = ".emb"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600
_HASH_RE = re.compile(r"^[0-9a-f]{16,128}$")
_N_KEY_LOCKS = 64


def _fingerprint_tag(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()[:16]


class EmbeddingCache:
    """A size-bounded LRU embedding store in ``directory`` (created if missing). See the module docstring."""

    def __init__(self, directory: Path | str, *, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Striped in-process locks: two threads missing on the same image encode it once, not twice.
        self._key_locks = [threading.Lock() for _ in range(_N_KEY_LOCKS)]

    # -- paths -------------------------------------------------------------------------------------------

    def path_for(self, sha256: str, fingerprint: str) -> Path:
        """The entry file for a key (it may not exist)."""
        key = sha256.lower()
        if not _HASH_RE.match(key):
            raise ValueError(f"not a hex content hash: {sha256!r}")
        return self.directory / f"{key}-{_fingerprint_tag(fingerprint)}{_SUFFIX}"

    def _entries(self) -> list[tuple[Path, int, int]]:
        """(path, size, mtime_ns) of every entry; entries deleted concurrently are skipped."""
        found = []
        try:
            with os.scandir(self.directory) as it:
                for entry in it:
                    if not entry.name.endswith(_SUFFIX) or entry.name.startswith("."):
                        continue
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    found.append((Path(entry.path), st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            pass
        return found

    # -- public API --------------------------------------------------------------------------------------

    def get(self, sha256: str, fingerprint: str) -> Embedding | None:
        """The cached embedding, or None on a miss. A corrupt entry is deleted and reported as a miss."""
        path = self.path_for(sha256, fingerprint)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                data = bytearray(size)  # writable, so the features array is writable too
                read = fh.readinto(data)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("embedding cache: cannot read %s: %s", path.name, exc)
            return None
        embedding = _parse(data if read == size else data[:read], sha256.lower(), fingerprint)
        if embedding is None:
            logger.warning("embedding cache: discarding corrupt entry %s", path.name)
            _unlink_quietly(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # LRU: a hit makes the entry the newest
        return embedding

    def put(self, sha256: str, embedding: Embedding) -> None:
        """Store ``embedding`` (features as float16) atomically, then evict down to ``max_bytes``."""
        path = self.path_for(sha256, embedding.fingerprint)
        blob = _serialise(embedding, sha256.lower())
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".part", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.replace(tmp_name, path)
        except BaseException:
            _unlink_quietly(Path(tmp_name))
            raise
        self._evict(keep=path)

    def get_or_encode(self, sha256: str, rgb: np.ndarray, segmenter: Segmenter) -> tuple[Embedding, bool]:
        """``(embedding, hit)``: the cached embedding, or a fresh ``segmenter.encode(rgb)`` stored for next time.

        Segmenters with ``cacheable = False`` are encoded directly with no disk access. Failing to write the
        cache (disk full, permissions) is logged, never raised.
        """
        if not getattr(segmenter, "cacheable", True):
            return segmenter.encode(rgb), False
        fingerprint = segmenter.fingerprint
        cached = self.get(sha256, fingerprint)
        if cached is not None:
            return cached, True
        lock = self._key_locks[hash((sha256, fingerprint)) % _N_KEY_LOCKS]
        with lock:
            cached = self.get(sha256, fingerprint)  # another thread may have just stored it
            if cached is not None:
                return cached, True
            embedding = _as_float16(segmenter.encode(rgb))
            try:
                self.put(sha256, embedding)
            except OSError as exc:
                logger.warning("embedding cache: cannot store %s: %s", sha256[:12], exc)
        return embedding, False

    def total_bytes(self) -> int:
        """Bytes used by complete entries."""
        return sum(size for _, size, _ in self._entries())

    def count(self) -> int:
        """Number of complete entries."""
        return len(self._entries())

    def clear(self) -> None:
        """Delete every entry (and leftover temp files)."""
        for path, _, _ in self._entries():
            _unlink_quietly(path)
        self._remove_stale_temps(max_age=0)

    # -- internals ---------------------------------------------------------------------------------------

    def _evict(self, *, keep: Path) -> None:
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        if total > self.max_bytes:
            # Oldest first; the name breaks mtime ties so concurrent evictors agree on the order.
            for path, size, _ in sorted(entries, key=lambda e: (e[2], e[0].name)):
                if total <= self.max_bytes:
                    break
                if path == keep:
                    continue
                _unlink_quietly(path)
                total -= size
        self._remove_stale_temps(max_age=_STALE_TMP_SECONDS)

    def _remove_stale_temps(self, *, max_age: float) -> None:
        """Temp files of writers that died mid-write; live writers' files are younger than ``max_age``."""
        now = time.time()
        try:
            with os.scandir(self.directory) as it:
                for entry in it:
                    if entry.name.startswith(_TMP_PREFIX):
                        try:
                            if now - entry.stat().st_mtime >= max_age:
                                _unlink_quietly(Path(entry.path))
                        except FileNotFoundError:
                            continue
        except FileNotFoundError:
            pass


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("embedding cache: cannot delete %s: %s", path.name, exc)


def _as_float16(embedding: Embedding) -> Embedding:
    """The embedding in its stored form (float16), handed out on the first run too, so a later hit predicts
    bit-identically."""
    arrays = embedding.arrays()
    if all(a.dtype == np.float16 for a in arrays.values()):
        return embedding
    if isinstance(embedding.features, np.ndarray):
        return dataclasses.replace(embedding, features=embedding.features.astype(np.float16))
    return dataclasses.replace(embedding, features={k: v.astype(np.float16) for k, v in arrays.items()})


def _serialise(embedding: Embedding, sha256: str) -> bytes:
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
    header.update(
        {
            "original_size": list(embedding.original_size),
            "input_size": list(embedding.input_size),
            "payload_len": len(payload),
            "crc32": zlib.crc32(payload),
        }
    )
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return MAGIC + struct.pack("<I", len(header_bytes)) + header_bytes + payload


def _parse(data: bytearray, sha256: str, fingerprint: str) -> Embedding | None:
    """Decode an entry; None if anything is off (corrupt, truncated, or another key's file)."""
    try:
        if len(data) < len(MAGIC) + 4 or bytes(data[: len(MAGIC)]) != MAGIC:
            return None
        (header_len,) = struct.unpack_from("<I", data, len(MAGIC))
        start = len(MAGIC) + 4
        if header_len > 65536 or start + header_len > len(data):
            return None
        header: dict[str, Any] = json.loads(bytes(data[start : start + header_len]).decode("utf-8"))
        payload = memoryview(data)[start + header_len :]
        if "arrays" in header:
            layout = [(str(name), tuple(int(d) for d in shape)) for name, shape in header["arrays"]]
        else:
            layout = [("", tuple(int(d) for d in header["shape"]))]
        expected = sum(int(np.prod(shape)) * 2 for _, shape in layout)
        if (
            header.get("fingerprint") != fingerprint
            or header.get("sha256") != sha256
            or header.get("dtype") != "float16"
            or header.get("payload_len") != len(payload)
            or expected != len(payload)
            or zlib.crc32(payload) != header.get("crc32")
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
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
        return None
