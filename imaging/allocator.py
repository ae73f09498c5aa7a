"""The C allocator's thresholds for a process that runs tensor code (glibc only; elsewhere nothing changes).

glibc serves a large ``malloc`` from a fresh ``mmap`` until a freed block of that size raises its threshold,
and returns the top of the heap to the kernel past a trim threshold. Torch allocates its temporaries with
``malloc``, and the mask decoder's are 4-8 MB each (about sixty per pass), so with glibc's starting values
every pass pays page faults on memory it has just given back: measured on vit_b's decoder, 2048x1536, one
thread, 17-20% of a two-prompt ``predict_chosen_many`` (236 -> 195 ms), with much less spread. Pinning the
thresholds where glibc's own dynamic rule would settle after one such block (mmap 32 MB, its ceiling; trim
twice that) keeps those blocks on the heap; blocks above 32 MB (the encoder's attention chunks) are still
mapped and unmapped as before, so peak memory moves by at most the trim threshold per arena.

An operator who tunes malloc through its environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``GLIBC_TUNABLES``) keeps those settings: nothing is changed then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading

#: Blocks below this come from the heap and are reused; glibc's ceiling for its dynamic threshold (64-bit).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Free memory at the top of a heap kept for reuse (glibc's own rule: twice the mmap threshold).
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_lock = threading.Lock()
_state: str | None = None


def tune_allocator_for_tensors() -> str:
    """Pin glibc's mmap and trim thresholds (see the module docstring), once per process; idempotent and
    thread-safe. Returns what happened: ``"tuned"``, ``"operator"`` (the environment sets malloc's
    tunables; left alone), ``"unsupported"`` (not glibc) or ``"refused"`` (``mallopt`` declined)."""
    global _state
    with _lock:
        if _state is None:
            _state = _tune()
        return _state


def _tune() -> str:
    if any(os.environ.get(name) for name in _OPERATOR_SETTINGS):
        return "operator"
    if platform.libc_ver()[0] != "glibc":
        return "unsupported"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "unsupported"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # The mmap threshold first: setting either one turns glibc's dynamic adjustment off, and a trim
    # threshold alone would leave every block above 128 KB mapped afresh (measured: twice as slow).
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        return "refused"
    if not mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES):
        return "refused"
    return "tuned"
