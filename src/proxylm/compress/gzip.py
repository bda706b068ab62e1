"""`gzip`: each document gzip-compressed on its own; the output bytes are the symbols (alphabet 256).

Design choices:
- mtime is fixed at 0 so the same document always gives the same symbols (the gzip header
  otherwise stamps the current time).
- One gzip member per document, header and CRC included: the stream is a valid .gz file, and
  the CRC turns a corrupted stream into an error instead of wrong bytes.
- DESIGN.md section 3: gzip is the proxy that does NOT transfer; it is here as the negative control.
"""

from __future__ import annotations

import gzip as _gzip
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from proxylm.compress.base import Compressor, CompressorError
from proxylm.compress.base import check_symbols


class GzipCompressor(Compressor):
    name = "gzip"

    def __init__(self, *, level: int = 9) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
            raise CompressorError(f"gzip: level must be an integer in 0..9, got {level!r}")
        self.level = level  # zlib compression level; 9 = smallest output

    @property
    def alphabet_size(self) -> int:
        return 256

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level}

    def encode(self, data: bytes) -> np.ndarray:
        packed = _gzip.compress(data, compresslevel=self.level, mtime=0)
        return np.frombuffer(packed, dtype=np.uint8).copy()

    def encode_many(self, docs: Iterable[bytes]) -> list[np.ndarray]:
        return [self.encode(doc) for doc in docs]

    def decode(self, symbols: np.ndarray | list[int], side: np.ndarray | None = None) -> bytes:
        packed = check_symbols(symbols, self.alphabet_size, self.name).astype(np.uint8, copy=False).tobytes()
        if not packed:
            raise CompressorError("gzip: empty stream; even an empty document encodes to a gzip header")
        try:
            return _gzip.decompress(packed)
        except EOFError:
            raise CompressorError(f"gzip: stream of {len(packed)} bytes is truncated (no end-of-stream marker)") from None
        except (OSError, zlib.error) as exc:
            raise CompressorError(f"gzip: stream of {len(packed)} bytes is not valid gzip data: {exc}") from None
