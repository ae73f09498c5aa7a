"""A size-bounded LRU directory of entry files: the one home of how the on-disk caches keep their files.

Each cache (``imaging.embedding_cache``, ``imaging.decoded_cache``) owns the format of its entries and one
:class:`BoundedFileStore` that owns everything about the files themselves:

- names: ``<content hash>-<tag><suffix>``; the content hash is the hex sha256 of the bytes the entry derives
  from, the tag a short hex digest of whatever else keys the entry (a model fingerprint, a decoder version);
- atomic writes: a writer writes a unique temp file (``.tmp-*.part``) in the same directory and
  ``os.replace``-s it into place (atomic on POSIX), so readers in any thread or process see either no entry
  or a complete one; temp files of writers that died mid-write are removed after an hour;
- the size bound: after each write the oldest entries (by mtime, refreshed on every hit: LRU) are deleted
  until the total is under ``max_bytes``; the entry just written is never evicted by its own write, so the
  directory can exceed the bound by at most one entry per concurrent writer. Eviction tolerates entries
  vanishing underneath it (another process evicting or clearing at the same time);
- corrupt entries: a parser that rejects an entry's bytes gets it deleted, and the read is a miss;
- single flight: two threads of one process missing the same entry make it once (striped locks), the
  second one then hits.

Entries share one framing (:func:`entry_prefix`, :func:`entry_payload`)::

    MAGIC (8 bytes, the cache's own) | header length (uint32 LE) | JSON header | payload

where the header, besides the cache's own fields, ends with ``payload_len`` and ``crc32`` (zlib's, of the
payload), so a truncated or damaged payload is detected before any of it is used.

Nothing here raises on a damaged or unreadable entry (it is a miss, logged); only writes raise ``OSError``,
and :meth:`BoundedFileStore.get_or_make` logs even those. One directory per store: a store counts, evicts
and clears only the files with its suffix, but removes any leftover temp file in its directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: What an entry is written from: any C-contiguous buffer (a numpy array's ``memoryview`` is written as is).
Chunk = bytes | bytearray | memoryview

_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600
_HASH_RE = re.compile(r"^[0-9a-f]{16,128}$")
_N_KEY_LOCKS = 64
_MAX_HEADER_BYTES = 65536


class BoundedFileStore:
    """Entry files with ``suffix`` in ``directory`` (created if missing), at most about ``max_bytes`` in all.

    ``label`` names the store in log messages ("embedding cache"). Thread- and process-safe; see the module
    docstring for the guarantees.
    """

    def __init__(self, directory: Path | str, *, max_bytes: int, suffix: str, label: str) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.suffix = suffix
        self.label = label
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key_locks = [threading.Lock() for _ in range(_N_KEY_LOCKS)]

    # -- entries -----------------------------------------------------------------------------------------

    def entry_path(self, content_hash: str, tag: str) -> Path:
        """The entry file of ``(content_hash, tag)`` (it may not exist); ValueError unless both are hex, so a
        key can never name a path outside the directory."""
        key = content_hash.lower()
        if not _HASH_RE.match(key):
            raise ValueError(f"not a hex content hash: {content_hash!r}")
        if not _HASH_RE.match(tag):
            raise ValueError(f"not a hex tag: {tag!r}")
        return self.directory / f"{key}-{tag}{self.suffix}"

    def read(self, path: Path) -> bytearray | None:
        """The entry's bytes in a fresh, writable buffer (so arrays viewing it are writable), or None when it
        is missing or unreadable (logged). A file shorter than its size at open (being replaced) comes back
        short; the caller's parser rejects it."""
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                data = bytearray(size)
                read = fh.readinto(data)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("%s: cannot read %s: %s", self.label, path.name, exc)
            return None
        return data if read == size else data[:read]

    def touch(self, path: Path) -> None:
        """Mark a hit: the entry becomes the newest (the last to be evicted)."""
        with contextlib.suppress(OSError):
            os.utime(path)

    def discard(self, path: Path) -> None:
        """Delete a corrupt entry (logged); a later read is a miss."""
        logger.warning("%s: discarding corrupt entry %s", self.label, path.name)
        _unlink_quietly(path)

    def load(self, path: Path, parse: Callable[[bytearray], T | None]) -> T | None:
        """``parse(entry bytes)``, or None on a miss. ``parse`` returns None for bytes it rejects (truncated,
        corrupt, another key's): the entry is discarded. A hit is touched."""
        data = self.read(path)
        if data is None:
            return None
        value = parse(data)
        if value is None:
            self.discard(path)
            return None
        self.touch(path)
        return value

    def write(self, path: Path, chunks: Iterable[Chunk]) -> None:
        """Store the concatenated ``chunks`` as the entry at ``path`` atomically, then evict down to
        ``max_bytes`` (never this entry). Raises ``OSError`` (disk full, permissions); nothing is left behind."""
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".part", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
            os.replace(tmp_name, path)
        except BaseException:
            _unlink_quietly(Path(tmp_name))
            raise
        self._evict(keep=path)

    def get_or_make(
        self,
        path: Path,
        *,
        parse: Callable[[bytearray], T | None],
        make: Callable[[], T],
        serialise: Callable[[T], Iterable[Chunk]],
    ) -> tuple[T, bool]:
        """``(value, hit)``: the entry at ``path`` parsed, or ``make()`` stored (as ``serialise(value)``) for
        next time. Threads of this process missing the same entry call ``make`` once: the others wait and hit.
        Failing to store (``OSError``) is logged, never raised; what ``make`` raises propagates, storing
        nothing."""
        cached = self.load(path, parse)
        if cached is not None:
            return cached, True
        with self._key_locks[hash(path) % _N_KEY_LOCKS]:
            cached = self.load(path, parse)  # another thread may have just stored it
            if cached is not None:
                return cached, True
            value = make()
            try:
                self.write(path, serialise(value))
            except OSError as exc:
                logger.warning("%s: cannot store %s: %s", self.label, path.name, exc)
        return value, False

    # -- the whole store ---------------------------------------------------------------------------------

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

    def _entries(self) -> list[tuple[Path, int, int]]:
        """(path, size, mtime_ns) of every entry; entries deleted concurrently are skipped."""
        found = []
        try:
            with os.scandir(self.directory) as it:
                for entry in it:
                    if not entry.name.endswith(self.suffix) or entry.name.startswith("."):
                        continue
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    found.append((Path(entry.path), st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            pass
        return found

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


def entry_prefix(magic: bytes, header: dict[str, Any], payload: Chunk) -> bytes:
    """What precedes ``payload`` in an entry: ``magic``, the header length and ``header`` as compact JSON,
    with ``payload_len`` and ``crc32`` added last. ``payload`` must be a flat (1-D bytes) buffer."""
    framed = {**header, "payload_len": len(payload), "crc32": zlib.crc32(payload)}
    header_bytes = json.dumps(framed, separators=(",", ":")).encode("utf-8")
    return magic + struct.pack("<I", len(header_bytes)) + header_bytes


def entry_payload(magic: bytes, data: bytearray) -> tuple[dict[str, Any], int] | None:
    """``(header, payload offset)`` of an entry framed by :func:`entry_prefix`, or None when anything is off:
    another magic, a truncated or unparsable header, a payload of another length or CRC."""
    start = len(magic) + 4
    if len(data) < start or bytes(data[: len(magic)]) != magic:
        return None
    (header_len,) = struct.unpack_from("<I", data, len(magic))
    if header_len > _MAX_HEADER_BYTES or start + header_len > len(data):
        return None
    try:
        header = json.loads(bytes(data[start : start + header_len]).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    offset = start + header_len
    with memoryview(data) as view:
        payload = view[offset:]
        intact = (
            isinstance(header, dict)
            and header.get("payload_len") == len(payload)
            and header.get("crc32") == zlib.crc32(payload)
        )
        payload.release()
    return (header, offset) if intact else None


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("file store: cannot delete %s: %s", path.name, exc)
