"""The C allocator's thresholds for tensor code (imaging.allocator), each case in a fresh interpreter."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# A decoder pass in miniature: six 4-8 MB temporaries written and freed, ten times over. The page faults of
# the last nine rounds show whether freed memory went back to the kernel (and is faulted in again) or stayed
# for reuse.
PROBE = """
import ctypes, json, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
state = None
if sys.argv[1] == "tune":
    from imaging.allocator import tune_allocator_for_tensors
    state = [tune_allocator_for_tensors(), tune_allocator_for_tensors()]

def round_trip():
    sizes = [(4 + i % 5) << 20 for i in range(6)]
    blocks = [libc.malloc(size) for size in sizes]
    for block, size in zip(blocks, sizes):
        libc.memset(block, 1, size)
    for block in blocks:
        libc.free(block)

round_trip()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    round_trip()
print(json.dumps({"state": state, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}))
"""
TOUCHED_PAGES = 9 * sum((4 + i % 5) << 20 for i in range(6)) // 4096


def probe(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=environ | env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_freed_temporaries_stay_for_reuse_once_tuned():
    untuned = probe("plain")
    tuned = probe("tune")
    assert tuned["state"] == ["tuned", "tuned"]  # once per process; the second call reports the first
    # glibc's own thresholds give the freed top of the heap back every round; tuned, it is reused.
    assert untuned["faults"] > TOUCHED_PAGES // 2
    assert tuned["faults"] < TOUCHED_PAGES // 20


def test_an_operators_malloc_settings_are_left_alone():
    result = probe("tune", GLIBC_TUNABLES="glibc.malloc.arena_max=2")
    assert result["state"] == ["operator", "operator"]
    assert result["faults"] > TOUCHED_PAGES // 2  # glibc's own behaviour, unchanged
