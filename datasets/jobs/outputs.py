"""A small bounded in-process cache of the outputs a runner just encoded, for the seed stream's relay.

When the relay (``legacy.streams.job_relay``) runs in the process whose runner made a variant, it takes
the variant's bytes (and pixels, for a resized stream rendition) from here instead of reading the stored
file back and decoding it. This is an optimisation only, never a source of truth: entries are keyed by the
variant's storage name and checked against the Variant row's sha256 (a rerun elsewhere that overwrote the
file misses), the cache is bounded in bytes (least recently used entries go first), and any miss falls
back to storage. Nothing here decides correctness, so it is safe with runners in other processes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

#: Upper bound on what the cache holds (encoded bytes plus pixels): a few recent 2048x1536 variants.
MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RecentOutput:
    """One stored output: its encoded ``data`` (sha256 ``sha256``), and its pixels and mask when kept."""

    sha256: str
    data: bytes
    rgb: np.ndarray | None = None
    mask: np.ndarray | None = None
    mask_png: bytes | None = None

    @property
    def nbytes(self) -> int:
        return (
            len(self.data)
            + (self.rgb.nbytes if self.rgb is not None else 0)
            + (self.mask.nbytes if self.mask is not None else 0)
            + len(self.mask_png or b"")
        )


class RecentOutputs:
    """Thread-safe LRU of :class:`RecentOutput` by storage name, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, RecentOutput] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def put(self, name: str, entry: RecentOutput) -> None:
        """Remember ``entry`` as the content of storage file ``name`` (replacing an older one)."""
        if entry.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(name, None)
            if old is not None:
                self._size -= old.nbytes
            self._entries[name] = entry
            self._size += entry.nbytes
            while self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= evicted.nbytes

    def get(self, name: str, sha256: str) -> RecentOutput | None:
        """The entry of ``name`` if it holds the content with ``sha256``, else None."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.sha256 != sha256:
                return None
            self._entries.move_to_end(name)
            return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._entries)


#: The process's cache (the runner puts, the seed relay gets).
recent_outputs = RecentOutputs()
