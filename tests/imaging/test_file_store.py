"""The bounded file store under the on-disk caches: framing, atomic writes, LRU bound, corrupt entries,
single-flight misses, and store failures that never reach the caller."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from imaging.file_store import BoundedFileStore, entry_payload, entry_prefix
from tests.fixtures.waiting import MissGate, run_in_threads

MAGIC = b"TESTENT\n"
TAG = "0123456789abcdef"


def key(i: int) -> str:
    return hashlib.sha256(f"entry-{i}".encode()).hexdigest()


def blob(i: int, size: int = 1000) -> list[bytes]:
    payload = bytes([i % 256]) * size
    return [entry_prefix(MAGIC, {"i": i}, payload), payload]


def parse(data: bytearray):
    framed = entry_payload(MAGIC, data)
    return None if framed is None else (framed[0]["i"], bytes(data[framed[1] :]))


def test_framing_round_trips_and_refuses_damage():
    payload = b"pixels" * 100
    data = bytearray(entry_prefix(MAGIC, {"name": "x"}, payload) + payload)
    header, offset = entry_payload(MAGIC, data)
    assert header["name"] == "x" and header["payload_len"] == len(payload)
    assert bytes(data[offset:]) == payload
    assert entry_payload(b"OTHERMG\n", data) is None  # another cache's entry
    assert entry_payload(MAGIC, data[:-1]) is None  # truncated
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    assert entry_payload(MAGIC, flipped) is None  # the CRC catches one damaged byte
    assert entry_payload(MAGIC, bytearray(data[:10])) is None
    assert entry_payload(MAGIC, bytearray()) is None


def test_write_then_load_and_a_rejected_entry_is_discarded(tmp_path):
    store = BoundedFileStore(tmp_path, max_bytes=10**6, suffix=".t", label="test store")
    path = store.entry_path(key(1), TAG)
    assert path.parent == tmp_path and path.name.endswith(f"-{TAG}.t")
    assert store.load(path, parse) is None
    store.write(path, blob(1))
    assert store.load(path, parse) == (1, bytes([1]) * 1000)
    assert store.count() == 1 and store.total_bytes() == path.stat().st_size
    assert store.load(path, lambda data: None) is None  # the parser refuses it: deleted
    assert not path.exists() and store.count() == 0


def test_entry_paths_are_hex_only(tmp_path):
    store = BoundedFileStore(tmp_path, max_bytes=10**6, suffix=".t", label="test store")
    with pytest.raises(ValueError):
        store.entry_path("../../etc/passwd", TAG)
    with pytest.raises(ValueError):
        store.entry_path(key(1), "../x")


def test_the_bound_evicts_the_least_recently_used_first(tmp_path):
    store = BoundedFileStore(tmp_path, max_bytes=10**9, suffix=".t", label="test store")
    store.write(store.entry_path(key(0), TAG), blob(0))
    size = store.total_bytes()
    store.clear()
    store = BoundedFileStore(tmp_path, max_bytes=3 * size, suffix=".t", label="test store")
    paths = [store.entry_path(key(i), TAG) for i in range(4)]
    for i in range(3):
        store.write(paths[i], blob(i))
        os.utime(paths[i], ns=(10**9 * (i + 1), 10**9 * (i + 1)))
    assert store.load(paths[0], parse) is not None  # a hit: entry 1 is now the oldest
    store.write(paths[3], blob(3))
    assert [p.exists() for p in paths] == [True, False, True, True]
    assert store.total_bytes() <= 3 * size


def test_threads_missing_one_entry_make_it_once(tmp_path, monkeypatch):
    store = BoundedFileStore(tmp_path, max_bytes=10**6, suffix=".t", label="test store")
    path = store.entry_path(key(7), TAG)
    gate = MissGate(store, 6, monkeypatch)
    makes = []

    def make():
        gate.wait()  # every thread has missed before the first one stores
        makes.append(1)
        return (7, bytes([7]) * 1000)

    results = run_in_threads(
        6, lambda: store.get_or_make(path, parse=parse, make=make, serialise=lambda v: blob(v[0]))
    )
    assert len(makes) == 1
    assert sorted(hit for _, hit in results) == [False] + [True] * 5
    assert all(value == (7, bytes([7]) * 1000) for value, _ in results)


def test_a_store_that_cannot_write_still_hands_out_the_value(tmp_path, caplog):
    store = BoundedFileStore(tmp_path / "gone", max_bytes=10**6, suffix=".t", label="test store")
    shutil.rmtree(tmp_path / "gone")  # e.g. an operator removed it under a running worker
    path = store.entry_path(key(2), TAG)
    value, hit = store.get_or_make(path, parse=parse, make=lambda: (2, b"v"), serialise=lambda v: blob(2))
    assert (value, hit) == ((2, b"v"), False)
    assert "test store: cannot store" in caplog.text


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    store = BoundedFileStore(tmp_path, max_bytes=10**6, suffix=".t", label="test store")
    path = store.entry_path(key(3), TAG)

    def chunks():
        yield b"start"
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.write(path, chunks())
    assert list(tmp_path.iterdir()) == []
