"""On-disk cache of decoded images (:class:`imaging.codecs.DecodedImage`), keyed by the original file's sha256
and the decoder.

Decoding a stored original costs tens of milliseconds (a 2048x1536 PNG photo: ~55 ms of zlib inflate alone);
reading back its raw pixels costs a few. Every job run, re-run and preview that decodes the same original in
any process of the machine pays the decode once. Content-addressed like the embedding cache, so it is shared
across datasets and users without leaking anything: an entry is only found by presenting the same bytes'
hash. One file per entry::

    <sha256>-<decoder tag>.dec
    = MAGIC (8 bytes) | header length (uint32 LE) | JSON header | raw RGB bytes (HxWx3 uint8, C order)

The header records the image hash, the decoder tag, ``shape``, ``is_grayscale``, ``format``, the payload's
exact length and its ``zlib.crc32``. The decoder tag hashes :data:`imaging.codecs.DECODER_VERSION` with
Pillow's version, so a change of either never serves pixels the current decoder would not produce.

Integrity check: the full CRC32 of the payload. It measured 1.8 ms on a 9.4 MB payload (2048x1536x3, zlib
1.2.13 here), within the ~3 ms budget of a hit, so there is no need to trade it for a checksum of a strided
sample: the full CRC catches any damaged byte, a sample only the ones it happens to read. A truncated,
corrupt or mismatched entry is deleted and treated as a miss (decoded again; nothing is raised). The files
(atomic writes, the LRU bound, single-flight misses) are kept by ``imaging.file_store.BoundedFileStore``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL

from imaging.codecs import DECODER_VERSION, DecodedImage, check_pixel_limit, decode_image
from imaging.file_store import BoundedFileStore, Chunk, entry_payload, entry_prefix

MAGIC = b"SAMDEC1\n"
_SUFFIX = ".dec"


def current_decoder_tag() -> str:
    """16 hex digits naming what :func:`imaging.codecs.decode_image` produces in this process."""
    return hashlib.sha256(f"{DECODER_VERSION}\x00{PIL.__version__}".encode()).hexdigest()[:16]


class DecodedImageCache:
    """A size-bounded LRU store of decoded images in ``directory``. See the module docstring.

    ``max_bytes <= 0`` disables it: :meth:`get_or_decode` decodes every time and nothing touches the disk
    (not even ``directory``'s creation). ``decoder_tag`` defaults to :func:`current_decoder_tag`.
    """

    def __init__(self, directory: Path | str, *, max_bytes: int, decoder_tag: str | None = None) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.decoder_tag = decoder_tag or current_decoder_tag()
        self._store = (
            BoundedFileStore(self.directory, max_bytes=self.max_bytes, suffix=_SUFFIX, label="decoded cache")
            if self.max_bytes > 0
            else None
        )

    @property
    def enabled(self) -> bool:
        return self._store is not None

    def path_for(self, sha256: str) -> Path:
        """The entry file of an original (it may not exist); ValueError unless ``sha256`` is hex."""
        return self._require_store().entry_path(sha256, self.decoder_tag)

    def get(self, sha256: str) -> DecodedImage | None:
        """The stored decode of the original whose bytes hash to ``sha256``, or None (a miss, or disabled).

        The pixels are a writable view of a fresh buffer read with ``readinto`` (no second copy), so callers
        own them. No pixel limit is checked here (:meth:`get_or_decode` does).
        """
        if self._store is None:
            return None
        return self._store.load(self.path_for(sha256), lambda data: self._parse(data, sha256.lower()))

    def put(self, sha256: str, decoded: DecodedImage) -> None:
        """Store ``decoded`` as the decode of ``sha256``'s bytes atomically, then evict down to ``max_bytes``.
        Raises ``OSError`` when the disk refuses; a no-op when disabled."""
        if self._store is not None:
            self._store.write(self.path_for(sha256), self._serialise(sha256.lower(), decoded))

    def get_or_decode(self, sha256: str, read_bytes: Callable[[], bytes], *, max_pixels: int) -> DecodedImage:
        """The decode of the original whose bytes hash to ``sha256``, with at most ``max_pixels`` pixels.

        A hit reads no original bytes, and raises the same ``ImageDecodeError`` as :func:`decode_image` when
        the stored decode has more than ``max_pixels`` pixels (the limit may have been lowered since). A miss
        calls ``read_bytes()`` and ``decode_image(..., max_pixels=max_pixels)`` (whose errors propagate,
        storing nothing) and stores the result; failing to store it is logged, never raised. Threads of one
        process missing the same image decode it once. The caller guarantees that ``read_bytes()`` returns
        the bytes ``sha256`` names: the cache trusts the key.
        """

        def decode() -> DecodedImage:
            return decode_image(read_bytes(), max_pixels=max_pixels)

        if self._store is None:
            return decode()
        decoded, hit = self._store.get_or_make(
            self.path_for(sha256),
            parse=lambda data: self._parse(data, sha256.lower()),
            make=decode,
            serialise=lambda value: self._serialise(sha256.lower(), value),
        )
        if hit:
            check_pixel_limit(decoded.width, decoded.height, max_pixels)
        return decoded

    def total_bytes(self) -> int:
        """Bytes used by complete entries (0 when disabled)."""
        return self._store.total_bytes() if self._store is not None else 0

    def count(self) -> int:
        """Number of complete entries (0 when disabled)."""
        return self._store.count() if self._store is not None else 0

    def clear(self) -> None:
        """Delete every entry (a no-op when disabled)."""
        if self._store is not None:
            self._store.clear()

    # -- internals ---------------------------------------------------------------------------------------

    def _require_store(self) -> BoundedFileStore:
        if self._store is None:
            raise RuntimeError("the decoded cache is disabled (max_bytes <= 0)")
        return self._store

    def _serialise(self, sha256: str, decoded: DecodedImage) -> list[Chunk]:
        rgb = np.ascontiguousarray(decoded.rgb, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB array, got shape {rgb.shape}")
        payload = memoryview(rgb).cast("B")  # the pixels as they are, written without a copy
        header = {
            "sha256": sha256,
            "decoder": self.decoder_tag,
            "shape": list(rgb.shape),
            "is_grayscale": bool(decoded.is_grayscale),
            "format": str(decoded.format),
        }
        return [entry_prefix(MAGIC, header, payload), payload]

    def _parse(self, data: bytearray, sha256: str) -> DecodedImage | None:
        """The entry's image, or None if anything is off (corrupt, truncated, another key's or decoder's)."""
        framed = entry_payload(MAGIC, data)
        if framed is None:
            return None
        header, offset = framed
        try:
            height, width, channels = (int(v) for v in header["shape"])
            is_grayscale, fmt = header["is_grayscale"], header["format"]
        except (KeyError, TypeError, ValueError):
            return None
        if (
            header.get("sha256") != sha256
            or header.get("decoder") != self.decoder_tag
            or channels != 3
            or height <= 0
            or width <= 0
            or height * width * 3 != len(data) - offset
            or not isinstance(is_grayscale, bool)
            or not isinstance(fmt, str)
        ):
            return None
        rgb = np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(height, width, 3)
        return DecodedImage(rgb=rgb, is_grayscale=is_grayscale, format=fmt)
