"""The compressor interface: bytes -> symbols in [0, alphabet_size) and back.

Every compressor is deterministic. All but `neural` are exactly lossless on every byte string
(empty, invalid UTF-8, NULs included). A compressor may also return side information per
document (the neural proxy's window byte counts): shards keep it beside the symbols, the model
never sees it, and `decode` may use it.

Trainable compressors (`trainable = True`) learn from the training split with `fit`, then
`save` their files into the shard directory; `load` rebuilds them from the saved config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from proxylm.errors import UserError


class CompressorError(UserError, ValueError):
    """A spec, file or symbol stream a compressor cannot use; the message says which and why."""


class Compressor(ABC):
    name: ClassVar[str]
    trainable: ClassVar[bool] = False

    @property
    @abstractmethod
    def alphabet_size(self) -> int:
        """Symbols are integers in [0, alphabet_size)."""

    @abstractmethod
    def encode(self, data: bytes) -> np.ndarray:
        """Bytes -> 1-D array of symbols (an unsigned dtype wide enough for the alphabet)."""

    @abstractmethod
    def decode(self, symbols: np.ndarray | list[int], side: np.ndarray | None = None) -> bytes:
        """Symbols -> bytes. Raises CompressorError on out-of-range or truncated input."""

    def encode_many(self, docs: Iterable[bytes]) -> list[np.ndarray]:
        """Encode several documents; compressors with a batched backend override this."""
        return [self.encode(doc) for doc in docs]

    def encode_with_side(self, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
        """Symbols plus per-document side information (None for all but the neural proxy)."""
        return self.encode(data), None

    def config(self) -> dict[str, Any]:
        """JSON-able parameters; with the files written by `save`, enough to rebuild this compressor."""
        return {"name": self.name}

    @property
    def ready(self) -> bool:
        """False for a trainable compressor that has been neither fitted nor loaded."""
        return True

    def fit(self, docs: Iterable[bytes]) -> None:
        """Train on documents of the training split (trainable compressors only)."""
        raise CompressorError(f"compressor '{self.name}' is not trainable")

    def save(self, directory: Path) -> dict[str, Any]:
        """Write any files the compressor needs into `directory` and return its config."""
        return self.config()

    @classmethod
    def load(cls, config: dict[str, Any], directory: Path) -> "Compressor":
        """Rebuild from a saved config (and the files `save` wrote into `directory`)."""
        params = {k: v for k, v in config.items() if k != "name"}
        return cls(**params)


def check_symbols(symbols: np.ndarray | list[int], alphabet_size: int, name: str) -> np.ndarray:
    """Symbols as a 1-D integer array, raising a clear error if any is outside [0, alphabet_size).

    Unsigned input that is in range is returned as it is (one max() instead of two comparisons
    and a copy); anything else comes back as int64.
    """
    arr = np.asarray(symbols)
    if arr.ndim == 1 and np.issubdtype(arr.dtype, np.unsignedinteger):
        if arr.size == 0 or int(arr.max()) < alphabet_size:
            return arr
    if arr.ndim != 1:
        raise CompressorError(f"{name}: symbols must be a 1-D sequence, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise CompressorError(f"{name}: symbols must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= alphabet_size)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CompressorError(
            f"{name}: symbol {int(arr[i])} at position {i} is outside the alphabet [0, {alphabet_size})"
        )
    return arr
