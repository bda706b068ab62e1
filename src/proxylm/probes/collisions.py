"""Collisions of the neural proxy: distinct raw chunks that share one window symbol.

A window symbol is a point inside the arithmetic-coding interval of the window's bytes, so
several chunks can share it (DESIGN.md section 3: "many raw chunks can share a symbol, mostly
differing only in whitespace tails"). `window_collisions` measures that over a corpus:

    stats = window_collisions(compress.build("neural:model=runs/neural-compressor/final"), docs)
    print(stats.to_dict())

Design choices:
- The unit is the window, read from the side information (byte counts), so a chunk is exactly
  the bytes the encoder put under its symbol. A window spanning several symbols (window_bits
  < 16, rare first bytes) counts as one key: the tuple of its symbols.
- Pair statistics (common-prefix share, whitespace tails) are averaged over all pairs of
  distinct chunks under each colliding symbol, each symbol limited to its `max_chunks` most
  frequent chunks so that one very ambiguous symbol cannot dominate or blow up the cost.
- Common-prefix share of a pair = common prefix length / length of the longer chunk; 1.0 would
  mean one chunk extends the other. A whitespace tail pair differs only in whitespace after its
  common prefix (b" \\t\\r\\n\\v\\f").
"""

from __future__ import annotations

import itertools
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from proxylm.compress.base import Compressor, CompressorError

WHITESPACE = b" \t\r\n\x0b\x0c"


@dataclass
class CollisionStats:
    windows: int
    """Windows in the corpus."""
    symbols: int
    """Distinct window symbols used."""
    chunks: int
    """Distinct (symbol, raw chunk) pairs."""
    colliding_symbols: int
    """Symbols that stand for two or more distinct chunks."""
    colliding_window_share: float
    """Share of windows whose symbol stands for two or more distinct chunks."""
    chunks_per_symbol: float
    """Mean distinct chunks per symbol used."""
    chunks_per_colliding_symbol: float
    """Mean distinct chunks per colliding symbol."""
    max_chunks_per_symbol: int
    """The most distinct chunks behind one symbol."""
    common_prefix_share: float
    """Mean over colliding pairs of common prefix length / longer chunk's length."""
    whitespace_tail_share: float
    """Share of colliding pairs whose chunks differ only in whitespace after the common prefix."""
    examples: list[dict[str, Any]] = field(default_factory=list)
    """The most used colliding symbols: symbol, windows, and chunk -> count (chunks as Python byte reprs)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_chunks(compressor: Compressor, docs: Iterable[bytes], batch_docs: int = 256) -> Iterator[tuple[tuple[int, ...], bytes]]:
    """(window symbols, raw chunk) for every window of every document, in order."""
    if not hasattr(compressor, "encode_many_with_side"):
        raise CompressorError(f"compressor '{compressor.name}' has no windows to analyse (needs encode_many_with_side)")
    batch: list[bytes] = []
    for doc in itertools.chain(docs, [None]):
        if doc is not None:
            batch.append(bytes(doc))
        if batch and (doc is None or len(batch) == batch_docs):
            for data, (symbols, side) in zip(batch, compressor.encode_many_with_side(batch)):
                yield from split_windows(data, symbols, side)
            batch = []


def split_windows(data: bytes, symbols: np.ndarray, side: np.ndarray | None) -> Iterator[tuple[tuple[int, ...], bytes]]:
    """(window symbols, raw chunk) of each window of one encoded document."""
    if side is None:
        raise CompressorError("collision analysis needs each window's byte count (side information)")
    first = np.flatnonzero(side)
    ends = np.append(first[1:], len(symbols))
    counts = side[first].astype(np.int64)
    offsets = np.cumsum(counts) - counts
    for a, b, offset, count in zip(first, ends, offsets, counts):
        yield tuple(int(s) for s in symbols[a:b]), data[offset : offset + count]


def window_collisions(compressor: Compressor, docs: Iterable[bytes], max_chunks: int = 64, examples: int = 5) -> CollisionStats:
    """Collision statistics of a windowed compressor (the neural proxy) over `docs`."""
    return collision_stats(window_chunks(compressor, docs), max_chunks, examples)


def collision_stats(windows: Iterable[tuple[tuple[int, ...], bytes]], max_chunks: int = 64, examples: int = 5) -> CollisionStats:
    """Collision statistics of (window symbols, raw chunk) pairs, e.g. from already encoded
    documents: `(w for doc, (s, side) in zip(docs, encoded) for w in split_windows(doc, s, side))`."""
    by_symbol: dict[tuple[int, ...], Counter[bytes]] = defaultdict(Counter)
    for key, chunk in windows:
        by_symbol[key][chunk] += 1
    total = sum(sum(c.values()) for c in by_symbol.values())
    colliding = {key: chunks for key, chunks in by_symbol.items() if len(chunks) > 1}
    prefix_shares, whitespace_tails = [], []
    for chunks in colliding.values():
        for a, b in itertools.combinations([c for c, _ in chunks.most_common(max_chunks)], 2):
            common = len(os.path.commonprefix([a, b]))
            prefix_shares.append(common / max(len(a), len(b)))
            whitespace_tails.append(not a[common:].strip(WHITESPACE) and not b[common:].strip(WHITESPACE))
    top = sorted(colliding.items(), key=lambda item: -sum(item[1].values()))[:examples]
    return CollisionStats(
        windows=total,
        symbols=len(by_symbol),
        chunks=sum(len(c) for c in by_symbol.values()),
        colliding_symbols=len(colliding),
        colliding_window_share=sum(sum(c.values()) for c in colliding.values()) / max(total, 1),
        chunks_per_symbol=sum(len(c) for c in by_symbol.values()) / max(len(by_symbol), 1),
        chunks_per_colliding_symbol=sum(len(c) for c in colliding.values()) / max(len(colliding), 1),
        max_chunks_per_symbol=max((len(c) for c in by_symbol.values()), default=0),
        common_prefix_share=float(np.mean(prefix_shares)) if prefix_shares else 0.0,
        whitespace_tail_share=float(np.mean(whitespace_tails)) if whitespace_tails else 0.0,
        examples=[
            {"symbol": list(key), "windows": sum(chunks.values()), "chunks": {repr(c): n for c, n in chunks.most_common(8)}}
            for key, chunks in top
        ],
    )
