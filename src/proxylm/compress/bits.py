"""The `bits` family: pure re-chunkings of the bytes into symbols of another width.

    doublebyte  16-bit symbols, alphabet 65,536, big-endian pairs (first byte is the high half)
    halfbyte    4-bit symbols,  alphabet 16, two per byte, high nibble first
    doublebit   2-bit symbols,  alphabet 4, four per byte, most significant first
    bit         1-bit symbols,  alphabet 2, eight per byte, most significant first

Design choices:
- Everything is vectorised numpy (shifts and masks over whole arrays); no Python loop per byte.
- Sub-byte widths divide 8, so every byte string maps to a whole number of symbols; a stream
  whose length is not a multiple of the symbols per byte is truncated and fails to decode.
- doublebyte and odd lengths. Every sequence of 16-bit symbols already spells an even-length
  byte string, so odd lengths need one extra symbol somewhere. The scheme, chosen to cost
  nothing for most even documents:
    * odd length: pad one 0x00 byte, then append the flag symbol 0xFFFF;
    * even length whose last pair is FF FF: append the flag symbol 0xFFFF as well;
    * any other even length: the plain pairs.
  Decoding: no trailing 0xFFFF means plain pairs. Otherwise drop the flag and look at the
  symbol before it: 0xFFFF means the document ended in FF FF; XX00 means an odd document whose
  last byte is XX. Anything else (a lone flag, a nonzero pad byte) is an invalid stream. The
  two flagged forms never collide because a padded symbol has low byte 00, never FF.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import numpy as np

from proxylm.compress.base import Compressor, CompressorError
from proxylm.compress.base import check_symbols


class _SubByteCompressor(Compressor):
    """Split each byte into 8 / width symbols, most significant first."""

    width: ClassVar[int]  # bits per symbol; divides 8

    def __init__(self) -> None:
        """No parameters; the explicit signature makes `build` name any unexpected one."""

    @property
    def alphabet_size(self) -> int:
        return 1 << self.width

    @property
    def _per_byte(self) -> int:
        return 8 // self.width

    @property
    def _shifts(self) -> np.ndarray:
        return np.arange(8 - self.width, -1, -self.width, dtype=np.uint8)  # e.g. [6, 4, 2, 0]

    def encode(self, data: bytes) -> np.ndarray:
        raw = np.frombuffer(data, dtype=np.uint8)  # (N,)
        if self.width == 1:
            return np.unpackbits(raw)  # (8N,)
        out = np.empty((raw.size, self._per_byte), dtype=np.uint8)  # (N, per_byte)
        for column, shift in enumerate(self._shifts):  # one vectorised pass per symbol slot
            np.bitwise_and(raw >> shift, self.alphabet_size - 1, out=out[:, column])
        return out.reshape(-1)  # (N * per_byte,)

    def encode_many(self, docs: Iterable[bytes]) -> list[np.ndarray]:
        return [self.encode(doc) for doc in docs]

    def decode(self, symbols: np.ndarray | list[int], side: np.ndarray | None = None) -> bytes:
        arr = check_symbols(symbols, self.alphabet_size, self.name).astype(np.uint8, copy=False)
        if arr.size % self._per_byte:
            raise CompressorError(
                f"{self.name}: stream of {arr.size} symbols is truncated; "
                f"its length must be a multiple of {self._per_byte} (symbols per byte)"
            )
        if self.width == 1:
            return np.packbits(arr).tobytes()
        groups = arr.reshape(-1, self._per_byte)  # (N, per_byte)
        out = np.zeros(groups.shape[0], dtype=np.uint8)  # (N,)
        for column, shift in enumerate(self._shifts):
            out |= groups[:, column] << shift
        return out.tobytes()


class HalfByteCompressor(_SubByteCompressor):
    name = "halfbyte"
    width = 4


class DoubleBitCompressor(_SubByteCompressor):
    name = "doublebit"
    width = 2


class BitCompressor(_SubByteCompressor):
    name = "bit"
    width = 1


FLAG = 0xFFFF  # doublebyte: marks a padded odd-length document (see the module docstring)


class DoubleByteCompressor(Compressor):
    name = "doublebyte"

    def __init__(self) -> None:
        """No parameters; the explicit signature makes `build` name any unexpected one."""

    @property
    def alphabet_size(self) -> int:
        return 1 << 16

    def encode(self, data: bytes) -> np.ndarray:
        odd = len(data) % 2 == 1
        padded = data + b"\x00" if odd else data
        pairs = np.frombuffer(padded, dtype=">u2").astype(np.uint16)  # (ceil(N / 2),)
        if odd or (pairs.size and pairs[-1] == FLAG):
            return np.append(pairs, np.uint16(FLAG))
        return pairs

    def encode_many(self, docs: Iterable[bytes]) -> list[np.ndarray]:
        return [self.encode(doc) for doc in docs]

    def decode(self, symbols: np.ndarray | list[int], side: np.ndarray | None = None) -> bytes:
        pairs = check_symbols(symbols, self.alphabet_size, self.name).astype(">u2")
        if pairs.size == 0 or pairs[-1] != FLAG:
            return pairs.tobytes()
        if pairs.size == 1:
            raise CompressorError(f"{self.name}: stream is a lone end flag {FLAG:#06x} with no symbol before it")
        last = int(pairs[-2])
        if last == FLAG:
            return pairs[:-1].tobytes()
        if last & 0xFF:
            raise CompressorError(
                f"{self.name}: invalid stream: symbol {last:#06x} before the end flag must be a padded "
                f"final byte (low byte 0x00) or another {FLAG:#06x}"
            )
        return pairs[:-1].tobytes()[:-1]
