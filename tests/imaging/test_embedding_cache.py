"""The on-disk embedding cache: hits, bit-identical reuse, LRU eviction, corruption, concurrent writers."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from imaging.classical import ClassicalSegmenter
from imaging.codecs import sha256_hex
from imaging.embedding_cache import EmbeddingCache
from imaging.segmenter import Embedding
from tests.fixtures.cache_damage import DAMAGES, damaged

FP = "test-fingerprint"


def fake_embedding(seed: int, fingerprint: str = FP, shape=(1, 8, 16, 16)) -> Embedding:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal(shape).astype(np.float16)
    return Embedding(
        features=features, original_size=(300, 400), input_size=(768, 1024), fingerprint=fingerprint
    )


def key(i: int) -> str:
    return hashlib.sha256(f"image-{i}".encode()).hexdigest()


ENTRY_BYTES = 8 * 16 * 16 * 2  # payload; each file adds a small header


class CountingSegmenter:
    """A stand-in segmenter that counts encodes and returns a deterministic embedding per image."""

    backend = "fake"
    fingerprint = FP
    model_type = None
    device = "cpu"
    cacheable = True

    def __init__(self) -> None:
        self.encode_calls = 0
        self._lock = threading.Lock()

    def encode(self, rgb: np.ndarray) -> Embedding:
        with self._lock:
            self.encode_calls += 1
        return fake_embedding(int(rgb.sum()) % 1000)


def test_put_get_roundtrip(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=10**7)
    emb = fake_embedding(1)
    assert cache.get(key(1), FP) is None
    cache.put(key(1), emb)
    got = cache.get(key(1), FP)
    assert got is not None
    assert got.features.dtype == np.float16 and np.array_equal(got.features, emb.features)
    assert got.features.flags.writeable
    assert (got.original_size, got.input_size, got.fingerprint) == (emb.original_size, emb.input_size, FP)
    assert cache.get(key(1), "another-model") is None  # keyed by fingerprint too
    assert cache.count() == 1 and cache.total_bytes() > ENTRY_BYTES


def test_float32_features_are_stored_as_float16(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=10**7)
    emb = fake_embedding(2)
    as32 = Embedding(emb.features.astype(np.float32), emb.original_size, emb.input_size, FP)
    cache.put(key(2), as32)
    assert np.array_equal(cache.get(key(2), FP).features, emb.features)


def test_get_or_encode_hits_after_first_miss(tmp_path, coffee):
    cache = EmbeddingCache(tmp_path, max_bytes=10**7)
    seg = CountingSegmenter()
    first, hit1 = cache.get_or_encode(key(3), coffee, seg)
    second, hit2 = cache.get_or_encode(key(3), coffee, seg)
    assert (hit1, hit2) == (False, True)
    assert seg.encode_calls == 1
    assert np.array_equal(first.features, second.features)


def test_cached_sam_embedding_predicts_bit_identically(tmp_path, tiny_sam, coffee):
    cache = EmbeddingCache(tmp_path, max_bytes=10**8)
    digest = sha256_hex(coffee.tobytes())
    calls = tiny_sam.encode_calls
    fresh, hit = cache.get_or_encode(digest, coffee, tiny_sam)
    assert not hit
    cached, hit = cache.get_or_encode(digest, coffee, tiny_sam)
    assert hit and tiny_sam.encode_calls == calls + 1
    prompt = (np.array([[120, 80], [500, 300]]), np.array([1, 0]))
    for a, b in zip(tiny_sam.predict(fresh, *prompt), tiny_sam.predict(cached, *prompt), strict=True):
        assert a.score == b.score and np.array_equal(a.mask, b.mask)


def test_non_cacheable_segmenter_writes_nothing(tmp_path, coffee):
    cache = EmbeddingCache(tmp_path, max_bytes=10**7)
    seg = ClassicalSegmenter()
    _, hit = cache.get_or_encode(key(4), coffee, seg)
    _, hit2 = cache.get_or_encode(key(4), coffee, seg)
    assert not hit and not hit2 and seg.encode_calls == 2
    assert cache.count() == 0 and list(tmp_path.iterdir()) == []


def test_lru_eviction_under_max_bytes(tmp_path):
    probe = EmbeddingCache(tmp_path / "probe", max_bytes=10**9)
    probe.put(key(0), fake_embedding(0))
    entry_size = probe.total_bytes()  # +- a few bytes: the header's CRC is printed in decimal
    bound = 3 * entry_size + 16
    cache = EmbeddingCache(tmp_path / "cache", max_bytes=bound)
    for i in range(3):
        cache.put(key(i), fake_embedding(i))
        os.utime(cache.path_for(key(i), FP), ns=(10**9 * (i + 1), 10**9 * (i + 1)))
    assert cache.count() == 3
    # A hit refreshes entry 0, so entry 1 is now the least recently used.
    assert cache.get(key(0), FP) is not None
    cache.put(key(3), fake_embedding(3))
    assert cache.count() == 3 and cache.total_bytes() <= bound
    assert cache.get(key(1), FP) is None
    assert all(cache.get(key(i), FP) is not None for i in (0, 2, 3))


def test_the_entry_just_written_survives_a_tiny_bound(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=10)
    cache.put(key(1), fake_embedding(1))
    cache.put(key(2), fake_embedding(2))
    assert cache.count() == 1 and cache.get(key(2), FP) is not None


@pytest.mark.parametrize("damage", DAMAGES)
def test_corrupt_entry_is_discarded_and_recomputed(tmp_path, coffee, damage):
    cache = EmbeddingCache(tmp_path, max_bytes=10**7)
    seg = CountingSegmenter()
    good, _ = cache.get_or_encode(key(5), coffee, seg)
    path = cache.path_for(key(5), FP)
    path.write_bytes(damaged(path.read_bytes(), damage))
    assert cache.get(key(5), FP) is None
    assert not path.exists()  # discarded
    again, hit = cache.get_or_encode(key(5), coffee, seg)
    assert not hit and seg.encode_calls == 2
    assert np.array_equal(again.features, good.features)
    assert cache.get(key(5), FP) is not None


def test_stale_temp_files_are_cleaned(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=10**7)
    stale = tmp_path / ".tmp-dead-writer.part"
    stale.write_bytes(b"x" * 100)
    os.utime(stale, ns=(10**9, 10**9))
    fresh = tmp_path / ".tmp-live-writer.part"
    fresh.write_bytes(b"x" * 100)
    cache.put(key(6), fake_embedding(6))
    assert not stale.exists() and fresh.exists()
    assert cache.count() == 1
    cache.clear()
    assert cache.count() == 0 and list(tmp_path.iterdir()) == []


def test_invalid_key_is_refused(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=10**7)
    with pytest.raises(ValueError):
        cache.get("../../etc/passwd", FP)


def test_concurrent_threads(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=20 * ENTRY_BYTES)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for round_ in range(30):
                i = (worker * 7 + round_) % 12
                cache.put(key(i), fake_embedding(i))
                got = cache.get(key((i + 5) % 12), FP)
                if got is not None:  # may have been evicted; if present it must be intact
                    assert np.array_equal(got.features, fake_embedding((i + 5) % 12).features)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.total_bytes() <= 20 * ENTRY_BYTES + 2 * ENTRY_BYTES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    for i in range(12):
        got = cache.get(key(i), FP)
        assert got is None or np.array_equal(got.features, fake_embedding(i).features)


def test_threads_missing_on_the_same_image_encode_it_once(tmp_path, coffee):
    cache = EmbeddingCache(tmp_path, max_bytes=10**7)
    seg = CountingSegmenter()
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_encode(key(9), coffee, seg)))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seg.encode_calls == 1
    assert sum(1 for _, hit in results if not hit) == 1


def _process_writer(directory: str, worker: int) -> int:
    cache = EmbeddingCache(Path(directory), max_bytes=6 * ENTRY_BYTES)
    bad = 0
    for round_ in range(25):
        i = (worker + round_) % 10
        cache.put(key(i), fake_embedding(i))
        got = cache.get(key((i + 3) % 10), FP)
        if got is not None and not np.array_equal(got.features, fake_embedding((i + 3) % 10).features):
            bad += 1
    return bad


def test_concurrent_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        bad = pool.starmap(_process_writer, [(str(tmp_path), w) for w in range(4)])
    assert bad == [0, 0, 0, 0]
    cache = EmbeddingCache(tmp_path, max_bytes=6 * ENTRY_BYTES)
    # Several processes may each keep their own just-written entry above the bound for a moment.
    assert cache.count() <= 6 + 4
    for i in range(10):
        got = cache.get(key(i), FP)
        assert got is None or np.array_equal(got.features, fake_embedding(i).features)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
