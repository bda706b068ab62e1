"""Packer: a stream of units (attention documents) -> fixed-length rows with masks and head targets.

Design choices:
- Algorithm: greedy fill with carry-over. Units are appended to one stream in the order they
  come; the stream is cut into rows of `seq_len`, and a unit that does not fit the rest of a row
  continues at the start of the next row (in the next batch if the row was the last). Documents
  longer than `seq_len` are therefore split into chunks, never dropped.
- Waste: no padding by default (0% pad positions); what a cut costs is context, not compute:
  each row starts with at most one continued chunk, which cannot see its earlier part. With
  `pad_below = k`, a row end with fewer than k free positions is padded instead of starting a
  new document there, bounding the padding at (k - 1) / seq_len per row.
- Positions restart at 0 at every unit and at every row start (a continued chunk starts at 0),
  so they stay below `seq_len` for learned or rotary position embeddings alike. `doc` numbers the
  attention documents of a row 0, 1, ...; padding has doc = -1.
- Each row is read with `H` ids of lookahead beyond its end (H = number of heads), so the last
  positions of a row predict the start of the next row's chunk: a cut loses no targets, and the
  row inputs tile the stream exactly (summing `raw_bytes` over batches counts each byte once).
- Heads (H = n_main_heads + n_raw_heads; head i predicts t+1+i):
    main head 0: masked only where the target is in another document (or padding); in
      `translation` the two views are one document, so `</raw>` -> `<compressed>` is predicted;
    main heads i >= 1: also masked where t and t+1+i are in different views;
    raw head j (index n_main_heads+j): valid only where t and its target are both in the same raw
      view. A raw view includes its sentinels `<raw>` and `</raw>`; bos and eos are outside it.
  For the view test, bos joins the first view of its document and eos the last.
- weights[b, i, t] = 1 / (number of valid heads at t) for each valid head, 0 elsewhere.
- is_raw / is_compressed tell whether the head-0 target at t (when valid) lies in a raw /
  compressed view, sentinels included; bos, eos and padding are neither.
- Everything per batch is vectorised numpy over (B, T + H) arrays; tensors share its memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from proxylm import vocab
from proxylm.config import ConfigError
from proxylm.data.batch import Batch
from proxylm.data.mixer import Kind, Unit

_FIELDS = ("ids", "kind", "seg", "unit")  # per-position stream arrays
_DTYPES = {"ids": np.int64, "kind": np.int8, "seg": np.int64, "unit": np.int64}


@dataclass
class PackConfig:
    seq_len: int = 1024
    """Positions per row (the model's context)."""
    batch_size: int = 8
    """Rows per batch on each rank."""
    pad_below: int = 0
    """Pad a row end with fewer free positions than this instead of starting a document there (0: never pad)."""
    pin_memory: bool = False
    """Return page-locked tensors (when CUDA is available) for a non-blocking copy to the GPU."""

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ConfigError(f"pack.seq_len must be >= 2, got {self.seq_len}")
        if self.batch_size < 1:
            raise ConfigError(f"pack.batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.pad_below < self.seq_len:
            raise ConfigError(f"pack.pad_below must be in [0, seq_len), got {self.pad_below}")

    @property
    def tokens_per_batch(self) -> int:
        return self.seq_len * self.batch_size


def head_offsets(n_main_heads: int, n_raw_heads: int) -> list[int]:
    """Offset of each head's target from its position: main heads 1..n_main, then raw heads."""
    if n_main_heads < 1 or n_raw_heads < 0:
        raise ConfigError(f"need n_main_heads >= 1 and n_raw_heads >= 0, got {n_main_heads} and {n_raw_heads}")
    return list(range(1, n_main_heads + n_raw_heads + 1))


def padded_length(stream_length: int, unit_length: int, cfg: PackConfig) -> int:
    """Stream length after appending a unit, padding included (the packer's placement rule)."""
    return stream_length + _pad_before(stream_length, cfg) + unit_length


def _pad_before(stream_length: int, cfg: PackConfig) -> int:
    room = -stream_length % cfg.seq_len
    return room if 0 < room < cfg.pad_below else 0


class Packer:
    """Collects units into a stream and cuts batches from it; its state is the uncut stream."""

    def __init__(self, cfg: PackConfig, n_main_heads: int = 1, n_raw_heads: int = 0):
        self.cfg = cfg
        self.n_main_heads = n_main_heads
        self.n_raw_heads = n_raw_heads
        self.lookahead = len(head_offsets(n_main_heads, n_raw_heads))
        self._chunks: deque[tuple[np.ndarray, ...]] = deque()
        self._length = 0
        self._units = 0  # units appended so far: the next unit's stream-wide id
        self._segments = 0  # views appended so far: the next view's stream-wide id

    def __len__(self) -> int:
        return self._length

    @property
    def needed(self) -> int:
        """Stream positions that must be buffered before `pop_batch`: the rows plus their lookahead."""
        return self.cfg.tokens_per_batch + self.lookahead

    def ready(self) -> bool:
        return self._length >= self.needed

    def add(self, unit: Unit) -> None:
        pad = _pad_before(self._length, self.cfg)
        if pad:
            self._push(np.full(pad, vocab.PAD), np.full(pad, Kind.NONE), np.full(pad, -1), np.full(pad, -1))
        segments = unit.view.astype(np.int64) + self._segments
        self._push(unit.ids, unit.kind, segments, np.full(len(unit.ids), self._units))
        self._units += 1
        self._segments += int(unit.view.max()) + 1

    def pop_batch(self) -> Batch:
        """The next batch; the stream keeps everything from the end of its last row on."""
        if not self.ready():
            raise ValueError(f"packer holds {self._length} positions, a batch needs {self.needed}")
        stream = self._take(self.needed)
        self._drop(self.cfg.tokens_per_batch)
        B, T = self.cfg.batch_size, self.cfg.seq_len
        rows = np.arange(B)[:, None] * T + np.arange(T + self.lookahead)[None, :]  # (B, T+H)
        return build_batch(*(stream[name][rows] for name in _FIELDS), seq_len=T, n_main_heads=self.n_main_heads,
                           n_raw_heads=self.n_raw_heads, pin_memory=self.cfg.pin_memory)

    def state_dict(self) -> dict:
        import torch

        stream = self._take(self._length)
        return {
            "units": self._units,
            "segments": self._segments,
            **{name: torch.from_numpy(stream[name].copy()) for name in _FIELDS},
        }

    def load_state_dict(self, state: dict) -> None:
        self._chunks.clear()
        self._length = 0
        self._units = int(state["units"])
        self._segments = int(state["segments"])
        self._push(*(np.asarray(state[name]) for name in _FIELDS))

    def _push(self, ids, kind, seg, unit) -> None:
        arrays = tuple(np.asarray(a, dtype=_DTYPES[name]) for name, a in zip(_FIELDS, (ids, kind, seg, unit)))
        if len(arrays[0]):
            self._chunks.append(arrays)
            self._length += len(arrays[0])

    def _take(self, n: int) -> dict[str, np.ndarray]:
        """The first n stream positions, concatenated (only the chunks they touch are copied)."""
        taken, have = [], 0
        for chunk in self._chunks:
            if have >= n:
                break
            taken.append(tuple(a[: n - have] for a in chunk))
            have += len(taken[-1][0])
        if not taken:
            return {name: np.zeros(0, dtype=_DTYPES[name]) for name in _FIELDS}
        return {name: np.concatenate([c[i] for c in taken]) for i, name in enumerate(_FIELDS)}

    def _drop(self, n: int) -> None:
        while n > 0:
            chunk = self._chunks[0]
            if len(chunk[0]) <= n:
                self._chunks.popleft()
                n -= len(chunk[0])
                self._length -= len(chunk[0])
            else:
                self._chunks[0] = tuple(a[n:] for a in chunk)
                self._length -= n
                n = 0


def build_batch(
    ids: np.ndarray,
    kind: np.ndarray,
    seg: np.ndarray,
    unit: np.ndarray,
    *,
    seq_len: int,
    n_main_heads: int = 1,
    n_raw_heads: int = 0,
    pin_memory: bool = False,
) -> Batch:
    """Rows of stream arrays, each (B, T + H) with H ids of lookahead, -> a Batch.

    `kind` holds Kind values, `seg` a view id and `unit` a document id, both unique along the
    stream (-1 for padding).
    """
    import torch

    T = seq_len
    offsets = head_offsets(n_main_heads, n_raw_heads)
    here = slice(0, T)
    real = unit[:, here] >= 0  # (B, T)
    valid = np.zeros((ids.shape[0], len(offsets), T), dtype=bool)  # (B, H, T)
    targets = np.full(valid.shape, vocab.IGNORE_INDEX, dtype=np.int64)  # (B, H, T)
    for head, offset in enumerate(offsets):
        there = slice(offset, offset + T)
        ok = real & (unit[:, there] == unit[:, here])
        if head >= 1:
            ok &= seg[:, there] == seg[:, here]
        if head >= n_main_heads:
            ok &= (kind[:, here] == Kind.RAW) & (kind[:, there] == Kind.RAW)
        valid[:, head] = ok
        targets[:, head] = np.where(ok, ids[:, there], vocab.IGNORE_INDEX)
    n_valid = valid.sum(axis=1, keepdims=True)  # (B, 1, T)
    weights = (valid / np.maximum(n_valid, 1)).astype(np.float32)  # (B, H, T)
    next_kind = kind[:, 1 : T + 1]  # (B, T) kind of head 0's target
    row_unit = unit[:, here]
    row_ids = ids[:, here]
    tensors = {
        "ids": row_ids,
        "pos": _positions(row_unit),
        "doc": _documents(row_unit),
        "targets": targets,
        "weights": weights,
        "is_raw": valid[:, 0] & (next_kind == Kind.RAW),
        "is_compressed": valid[:, 0] & (next_kind == Kind.COMPRESSED),
    }
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    if pin_memory and torch.cuda.is_available():
        tensors = {k: v.pin_memory() for k, v in tensors.items()}
    raw_bytes = int(((kind[:, here] == Kind.RAW) & vocab.is_byte_id(row_ids)).sum())
    return Batch(**tensors, raw_bytes=raw_bytes)


def _starts(row_unit: np.ndarray) -> np.ndarray:
    """(B, T) bool: a new attention document starts here (every row starts one)."""
    starts = np.ones(row_unit.shape, dtype=bool)
    starts[:, 1:] = row_unit[:, 1:] != row_unit[:, :-1]
    return starts


def _positions(row_unit: np.ndarray) -> np.ndarray:
    T = row_unit.shape[1]
    columns = np.broadcast_to(np.arange(T), row_unit.shape)  # (B, T)
    start_col = np.maximum.accumulate(np.where(_starts(row_unit), columns, 0), axis=1)  # (B, T)
    return np.where(row_unit >= 0, columns - start_col, 0).astype(np.int64)


def _documents(row_unit: np.ndarray) -> np.ndarray:
    doc = np.cumsum(_starts(row_unit), axis=1) - 1  # (B, T)
    return np.where(row_unit >= 0, doc, -1).astype(np.int64)
