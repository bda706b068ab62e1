"""`bpe-bytes`: BPE token ids written as fixed-width big-endian bytes (alphabet 256).

Design choices:
- Wraps a `BPECompressor`; fit, save and load delegate to it, so `bpe` and `bpe-bytes` with the
  same parameters share one tokenizer file format.
- Width: 2 bytes per token for up to 65,536 token codes, 3 above that (the fewest bytes that
  hold the largest code, never fewer than 2), fixed for a given tokenizer.
- `order=id` writes the token id itself. `order=gray` sorts the tokens by their byte strings and
  gives the token of rank k the code k ^ (k >> 1) (binary-reflected Gray code), so tokens that
  sort next to each other (often sharing a prefix) get codes that differ in one bit. Gray codes
  of 0..n-1 may exceed n-1; codes no token has are invalid when decoding.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from proxylm.compress.base import Compressor, CompressorError
from proxylm.compress.bpe import BPECompressor
from proxylm.compress.base import check_symbols

UNUSED = -1  # code_to_id entry for a code no token has


class TokenOrder(str, Enum):
    ID = "id"  # code = token id
    GRAY = "gray"  # code = Gray code of the token's rank in byte-string order


class BPEBytesCompressor(Compressor):
    name = "bpe-bytes"
    trainable = True

    def __init__(
        self, *, vocab: int = 8192, min_frequency: int = 2, path: str | Path | None = None, order: str = "id"
    ) -> None:
        try:
            self.order = TokenOrder(order)  # how token ids become codes
        except ValueError:
            choices = ", ".join(o.value for o in TokenOrder)
            raise CompressorError(f"bpe-bytes: order must be one of {choices}, got {order!r}") from None
        self.bpe = BPECompressor(vocab=vocab, min_frequency=min_frequency, path=path)
        self._tables: tuple[np.ndarray, np.ndarray, int] | None = None  # (id_to_code, code_to_id, width)

    @property
    def alphabet_size(self) -> int:
        return 256

    @property
    def ready(self) -> bool:
        return self.bpe.ready

    @property
    def width(self) -> int:
        """Bytes per token."""
        return self._codes()[2]

    def config(self) -> dict[str, Any]:
        return self.bpe.config() | {"name": self.name, "order": self.order.value}

    def fit(self, docs: Iterable[bytes]) -> None:
        self.bpe.fit(docs)
        self._tables = None

    def save(self, directory: Path) -> dict[str, Any]:
        return self.bpe.save(directory) | {"name": self.name, "order": self.order.value}

    @classmethod
    def load(cls, config: dict[str, Any], directory: Path) -> "BPEBytesCompressor":
        compressor = cls(order=config.get("order", TokenOrder.ID.value))
        bpe_config = {k: v for k, v in config.items() if k != "order"} | {"name": BPECompressor.name}
        compressor.bpe = BPECompressor.load(bpe_config, directory)
        return compressor

    def token_codes(self) -> np.ndarray:
        """The code of every token, indexed by token id."""
        return self._codes()[0]

    def _codes(self) -> tuple[np.ndarray, np.ndarray, int]:
        if self._tables is None:
            self._tables = self._build_tables()
        return self._tables

    def _build_tables(self) -> tuple[np.ndarray, np.ndarray, int]:
        n = self.bpe.alphabet_size
        if self.order is TokenOrder.ID:
            id_to_code = np.arange(n, dtype=np.int64)
        else:
            pieces = self.bpe.token_bytes()
            by_bytes = np.array(sorted(range(n), key=pieces.__getitem__), dtype=np.int64)  # rank -> id
            ranks = np.arange(n, dtype=np.int64)
            id_to_code = np.empty(n, dtype=np.int64)
            id_to_code[by_bytes] = ranks ^ (ranks >> 1)
        top = int(id_to_code.max())
        width = max(2, (top.bit_length() + 7) // 8)
        code_to_id = np.full(top + 1, UNUSED, dtype=np.int64)
        code_to_id[id_to_code] = np.arange(n)
        return id_to_code, code_to_id, width

    def _to_bytes(self, ids: np.ndarray) -> np.ndarray:
        id_to_code, _, width = self._codes()
        codes = id_to_code[ids]  # (T,)
        out = np.empty((codes.size, width), dtype=np.uint8)  # (T, width)
        for column in range(width):  # big-endian: high byte first
            out[:, column] = (codes >> (8 * (width - 1 - column))) & 0xFF
        return out.reshape(-1)  # (T * width,)

    def encode(self, data: bytes) -> np.ndarray:
        return self._to_bytes(self.bpe.encode(data).astype(np.int64))

    def encode_many(self, docs: Iterable[bytes]) -> list[np.ndarray]:
        return [self._to_bytes(ids.astype(np.int64)) for ids in self.bpe.encode_many(docs)]

    def decode(self, symbols: np.ndarray | list[int], side: np.ndarray | None = None) -> bytes:
        raw = check_symbols(symbols, self.alphabet_size, self.name)
        _, code_to_id, width = self._codes()
        if raw.size % width:
            raise CompressorError(
                f"bpe-bytes: stream of {raw.size} bytes is truncated; tokens are {width} bytes each"
            )
        columns = raw.reshape(-1, width)  # (T, width)
        codes = np.zeros(columns.shape[0], dtype=np.int64)  # (T,)
        for column in range(width):
            codes = (codes << 8) | columns[:, column]
        unused = codes >= code_to_id.size
        unused[~unused] = code_to_id[codes[~unused]] == UNUSED
        if unused.any():
            i = int(np.flatnonzero(unused)[0])
            raise CompressorError(
                f"bpe-bytes: code {int(codes[i])} at token position {i} (byte offset {i * width}) "
                f"belongs to no token ({self.order.value} order, {self.bpe.alphabet_size} tokens)"
            )
        return self.bpe.decode(code_to_id[codes])
