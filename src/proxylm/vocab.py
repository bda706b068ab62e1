"""The one id space shared by every view (DESIGN.md section 2).

    0          <pad>
    1          <bos>
    2          <eos>
    3..63      other specials; the sentinels <raw> </raw> <compressed> </compressed> are 12..15
    64..319    raw byte b            -> id 64 + b
    320..      compressed symbol s   -> id 320 + s  (own embedding rows: "separate embedding")

This module is the only place that knows these numbers. Everything else asks it.
"""

from __future__ import annotations

import numpy as np

PAD = 0
BOS = 1
EOS = 2
RAW_OPEN = 12
RAW_CLOSE = 13
COMPRESSED_OPEN = 14
COMPRESSED_CLOSE = 15

NUM_SPECIALS = 64
BYTE_OFFSET = NUM_SPECIALS
NUM_BYTES = 256
SYMBOL_OFFSET = BYTE_OFFSET + NUM_BYTES  # 320
BYTE_VOCAB_SIZE = SYMBOL_OFFSET  # a byte model needs exactly these ids

IGNORE_INDEX = -100  # target value that the loss skips (torch's cross_entropy default)

SPECIAL_NAMES = {
    PAD: "<pad>",
    BOS: "<bos>",
    EOS: "<eos>",
    RAW_OPEN: "<raw>",
    RAW_CLOSE: "</raw>",
    COMPRESSED_OPEN: "<compressed>",
    COMPRESSED_CLOSE: "</compressed>",
}


def vocab_size(alphabet_size: int) -> int:
    """Ids needed by a model that sees raw bytes and compressed symbols in [0, alphabet_size)."""
    if alphabet_size < 0:
        raise ValueError(f"alphabet_size must be >= 0, got {alphabet_size}")
    return SYMBOL_OFFSET + alphabet_size


def id_dtype(size: int) -> np.dtype:
    """The smallest unsigned dtype that holds values in [0, size)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def bytes_to_ids(data: bytes | np.ndarray) -> np.ndarray:
    """Raw bytes -> ids 64..319 (int64)."""
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    return arr.astype(np.int64) + BYTE_OFFSET


def ids_to_bytes(ids: np.ndarray | list[int]) -> bytes:
    """Byte ids -> raw bytes. Raises on any id that is not a byte id."""
    arr = np.asarray(ids, dtype=np.int64)
    bad = ~is_byte_id(arr)
    if bad.any():
        raise ValueError(f"id {int(arr[bad][0])} at position {int(np.flatnonzero(bad)[0])} is not a byte id")
    return (arr - BYTE_OFFSET).astype(np.uint8).tobytes()


def symbols_to_ids(symbols: np.ndarray) -> np.ndarray:
    """Compressed symbols -> ids 320.. (int64)."""
    return np.asarray(symbols).astype(np.int64) + SYMBOL_OFFSET


def ids_to_symbols(ids: np.ndarray) -> np.ndarray:
    arr = np.asarray(ids, dtype=np.int64)
    if (arr < SYMBOL_OFFSET).any():
        raise ValueError("ids below the compressed-symbol range cannot be turned into symbols")
    return arr - SYMBOL_OFFSET


def is_byte_id(ids):
    """Elementwise test for raw-byte ids; works on numpy arrays and torch tensors."""
    return (ids >= BYTE_OFFSET) & (ids < SYMBOL_OFFSET)


def is_symbol_id(ids):
    return ids >= SYMBOL_OFFSET


def is_special_id(ids):
    return ids < NUM_SPECIALS


def describe(token_id: int) -> str:
    """Human-readable name of one id, for debugging and printed samples."""
    if token_id < NUM_SPECIALS:
        return SPECIAL_NAMES.get(token_id, f"<special{token_id}>")
    if token_id < SYMBOL_OFFSET:
        return repr(bytes([token_id - BYTE_OFFSET]))[2:-1]
    return f"<s{token_id - SYMBOL_OFFSET}>"
