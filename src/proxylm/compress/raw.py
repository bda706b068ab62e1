"""`raw`: the identity compressor (alphabet 256), so the byte baseline takes the same path as a proxy.

Design choices:
- `encode` returns a writable uint8 copy (np.frombuffer over `bytes` is read-only, which would
  surprise a caller that edits symbols in place).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from proxylm.compress.base import Compressor, check_symbols


class RawCompressor(Compressor):
    name = "raw"

    def __init__(self) -> None:
        """No parameters; the explicit signature makes `build` name any unexpected one."""

    @property
    def alphabet_size(self) -> int:
        return 256

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).copy()

    def encode_many(self, docs: Iterable[bytes]) -> list[np.ndarray]:
        return [self.encode(doc) for doc in docs]

    def decode(self, symbols: np.ndarray | list[int], side: np.ndarray | None = None) -> bytes:
        return check_symbols(symbols, self.alphabet_size, self.name).astype(np.uint8, copy=False).tobytes()
