"""The decoded-image cache: hits identical to a decode without reading the original, corrupt entries
re-decoded, the LRU bound, the pixel limit on hits, the decoder tag, single-flight misses, and off."""

from __future__ import annotations

import os
import threading

import numpy as np
import PIL
import pytest

from imaging import decoded_cache as decoded_module
from imaging.codecs import decode_image, encode_image, sha256_hex
from imaging.decoded_cache import DecodedImageCache
from imaging.errors import ImageDecodeError
from tests.fixtures.cache_damage import DAMAGES, damaged
from tests.fixtures.images import image_bytes
from tests.fixtures.waiting import MissGate, run_in_threads

LIMIT = 100_000_000


class Originals:
    """``read(name)`` returns the encoded bytes of an original and counts the calls (reads of the original)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.reads: list[str] = []
        self._lock = threading.Lock()

    def reader(self, name: str):
        def read() -> bytes:
            with self._lock:
                self.reads.append(name)
            return self.files[name]

        return read

    def key(self, name: str) -> str:
        return sha256_hex(self.files[name])


@pytest.fixture(scope="module")
def files(photos) -> dict[str, bytes]:
    return {
        "colour.png": encode_image(np.ascontiguousarray(photos["coffee"]), "png"),
        "gray.png": image_bytes(photos["camera"]),  # an L-mode PNG
        "colour.jpg": image_bytes(photos["astronaut"], "JPEG", quality=90),
    }


@pytest.fixture
def originals(files) -> Originals:
    return Originals(files)


def test_a_hit_is_the_decode_and_reads_no_original(tmp_path, originals):
    cache = DecodedImageCache(tmp_path, max_bytes=10**9)
    for name in originals.files:
        fresh = cache.get_or_decode(originals.key(name), originals.reader(name), max_pixels=LIMIT)
        hit = cache.get_or_decode(originals.key(name), originals.reader(name), max_pixels=LIMIT)
        reference = decode_image(originals.files[name])
        for got in (fresh, hit):
            assert np.array_equal(got.rgb, reference.rgb)
            assert (got.is_grayscale, got.format) == (reference.is_grayscale, reference.format)
            assert got.rgb.dtype == np.uint8 and got.rgb.flags.c_contiguous
        assert hit.rgb.flags.writeable  # a view of its own read buffer, not a shared read-only one
        assert hit.rgb is not fresh.rgb  # the hit came from disk
    assert originals.reads == list(originals.files)  # one read each: the second call of each was a hit
    assert decode_image(originals.files["gray.png"]).is_grayscale
    assert cache.count() == 3


def test_a_hit_is_served_to_another_cache_on_the_same_directory(tmp_path, originals):
    """Another process (here another instance) on the machine reads what the first stored."""
    DecodedImageCache(tmp_path, max_bytes=10**9).get_or_decode(
        originals.key("colour.png"), originals.reader("colour.png"), max_pixels=LIMIT
    )
    other = DecodedImageCache(tmp_path, max_bytes=10**9)
    got = other.get_or_decode(originals.key("colour.png"), originals.reader("colour.png"), max_pixels=LIMIT)
    assert originals.reads == ["colour.png"]
    assert np.array_equal(got.rgb, decode_image(originals.files["colour.png"]).rgb)


def _damage(cache, originals, name: str, damage: str) -> None:
    path = cache.path_for(originals.key(name))
    other = cache.path_for(originals.key("gray.png")).read_bytes() if damage == "other_key" else b""
    path.write_bytes(damaged(path.read_bytes(), damage, other=other))


@pytest.mark.parametrize("damage", [*DAMAGES, "other_key"])
def test_a_corrupt_entry_is_discarded_and_decoded_again(tmp_path, originals, damage):
    cache = DecodedImageCache(tmp_path, max_bytes=10**9)
    for name in ("colour.png", "gray.png"):
        cache.get_or_decode(originals.key(name), originals.reader(name), max_pixels=LIMIT)
    _damage(cache, originals, "colour.png", damage)

    assert cache.get(originals.key("colour.png")) is None
    assert not cache.path_for(originals.key("colour.png")).exists()  # discarded
    again = cache.get_or_decode(originals.key("colour.png"), originals.reader("colour.png"), max_pixels=LIMIT)
    assert originals.reads.count("colour.png") == 2
    assert np.array_equal(again.rgb, decode_image(originals.files["colour.png"]).rgb)
    assert cache.get(originals.key("colour.png")) is not None


def test_the_size_bound_evicts_the_least_recently_used(tmp_path, originals):
    names = ["colour.png", "gray.png", "colour.jpg"]
    probe = DecodedImageCache(tmp_path / "probe", max_bytes=10**9)
    sizes = {}
    for name in names:
        probe.get_or_decode(originals.key(name), originals.reader(name), max_pixels=LIMIT)
        sizes[name] = probe.path_for(originals.key(name)).stat().st_size
    # Room for the two PNG entries and the JPEG's, but not for all three.
    bound = sizes["colour.png"] + sizes["colour.jpg"] + sizes["gray.png"] // 2
    cache = DecodedImageCache(tmp_path / "cache", max_bytes=bound)
    for i, name in enumerate(names[:2]):
        cache.get_or_decode(originals.key(name), originals.reader(name), max_pixels=LIMIT)
        os.utime(cache.path_for(originals.key(name)), ns=(10**9 * (i + 1), 10**9 * (i + 1)))
    assert cache.get(originals.key("colour.png")) is not None  # a hit: gray.png is now the oldest
    cache.get_or_decode(originals.key("colour.jpg"), originals.reader("colour.jpg"), max_pixels=LIMIT)
    assert cache.count() == 2 and cache.total_bytes() <= bound
    assert cache.get(originals.key("gray.png")) is None
    assert cache.get(originals.key("colour.png")) is not None and cache.get(originals.key("colour.jpg"))


def test_the_pixel_limit_holds_on_a_hit(tmp_path, originals):
    cache = DecodedImageCache(tmp_path, max_bytes=10**9)
    data = originals.files["colour.png"]
    cache.get_or_decode(originals.key("colour.png"), originals.reader("colour.png"), max_pixels=LIMIT)
    small = 1000
    with pytest.raises(ImageDecodeError) as direct:
        decode_image(data, max_pixels=small)
    with pytest.raises(ImageDecodeError) as cached:
        cache.get_or_decode(originals.key("colour.png"), originals.reader("colour.png"), max_pixels=small)
    assert str(cached.value) == str(direct.value)
    assert str(cached.value).startswith("image too large:")
    assert originals.reads == ["colour.png"]  # refused from the stored decode, the original was not read


def test_the_decoder_tag_separates_entries(tmp_path, originals, monkeypatch):
    key = originals.key("colour.png")
    first = DecodedImageCache(tmp_path, max_bytes=10**9)
    first.get_or_decode(key, originals.reader("colour.png"), max_pixels=LIMIT)
    tag = decoded_module.current_decoder_tag()

    monkeypatch.setattr(decoded_module, "DECODER_VERSION", decoded_module.DECODER_VERSION + 1)
    assert decoded_module.current_decoder_tag() != tag
    newer = DecodedImageCache(tmp_path, max_bytes=10**9)
    newer.get_or_decode(key, originals.reader("colour.png"), max_pixels=LIMIT)
    assert originals.reads == ["colour.png", "colour.png"]  # never served the old decoder's pixels

    monkeypatch.setattr(PIL, "__version__", "0.0.0")  # another Pillow: another tag again
    assert decoded_module.current_decoder_tag() not in (tag, newer.decoder_tag)
    assert first.count() == 2 and first.get(key) is not None and newer.get(key) is not None


def test_threads_missing_one_image_decode_it_once(tmp_path, originals, monkeypatch):
    cache = DecodedImageCache(tmp_path, max_bytes=10**9)
    gate = MissGate(cache._store, 5, monkeypatch)
    read = originals.reader("colour.png")

    def gated_read() -> bytes:
        gate.wait()  # every thread has missed before the first decode ends
        return read()

    results = run_in_threads(
        5, lambda: cache.get_or_decode(originals.key("colour.png"), gated_read, max_pixels=LIMIT)
    )
    assert originals.reads == ["colour.png"]
    reference = decode_image(originals.files["colour.png"]).rgb
    assert len(results) == 5 and all(np.array_equal(r.rgb, reference) for r in results)


def test_a_zero_bound_turns_it_off_without_touching_the_disk(tmp_path, originals):
    directory = tmp_path / "decoded"
    cache = DecodedImageCache(directory, max_bytes=0)
    key = originals.key("colour.png")
    for _ in range(2):
        got = cache.get_or_decode(key, originals.reader("colour.png"), max_pixels=LIMIT)
        assert np.array_equal(got.rgb, decode_image(originals.files["colour.png"]).rgb)
    assert originals.reads == ["colour.png", "colour.png"]
    assert not cache.enabled and not directory.exists()
    assert cache.get(key) is None and cache.count() == 0 and cache.total_bytes() == 0
    cache.clear()
    assert not directory.exists()


def test_a_failing_decode_stores_nothing(tmp_path):
    cache = DecodedImageCache(tmp_path, max_bytes=10**9)
    data = b"not an image"
    with pytest.raises(ImageDecodeError):
        cache.get_or_decode(sha256_hex(data), lambda: data, max_pixels=LIMIT)
    assert cache.count() == 0
