"""Packer: units (attention documents) -> fixed-length rows with masks and head targets.

Design choices:
- One stream per row: a `RowPacker` lays the units of one row's documents end to end and cuts
  its stream into rows of `seq_len`; the loader keeps one per row of the global batch, so the rows
  of a batch come from as many different documents as there are rows, and a unit longer than the
  room left continues in the same row of the next batch.
- Whole pairs: a group of units from one document that holds both views (a translation unit, or
  the two units of a parallel pair) and fits in one row is never cut by a row end. When it does
  not fit the room left, the packer looks ahead (up to `lookahead_units` groups, drawn one at a
  time, so documents are drawn at most a few places early) for the first group that fits the room
  whole or may be cut (a single view), and places that first; only if none exists is the room
  padded. A pair longer than a row is cut like any long unit. `whole_units` treats every unit
  like a pair (a byte LM trained on short chunks, each from its own `<bos>`: a chunk cut by a
  row end would go on in the next batch without it).
- Waste: padding only where the look-ahead found nothing (and, with `pad_below = k`, at row ends
  with fewer than k free positions), reported by `stats`. Out-of-order placement moves a group
  by at most a few documents within its row's stream.
- Positions restart at 0 at every unit and at every row start (a continued chunk starts at 0),
  so they stay below `seq_len` for learned or rotary position embeddings alike. `doc` numbers the
  attention documents of a row 0, 1, ...; padding has doc = -1.
- Each row is read with `H` ids of lookahead beyond its end (H = number of heads), so the last
  positions of a row predict the start of its continuation: a cut loses no targets, and the rows
  of one stream tile it exactly (summing `raw_bytes` over batches counts each byte once).
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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from proxylm import vocab
from proxylm.config import ConfigError
from proxylm.data.batch import Batch
from proxylm.data.mixer import Kind, Unit

FIELDS = ("ids", "kind", "seg", "unit")  # per-position stream arrays
_DTYPES = {"ids": np.int64, "kind": np.int8, "seg": np.int64, "unit": np.int64}


@dataclass
class PackConfig:
    seq_len: int = 1024
    """Positions per row (the model's context)."""
    batch_size: int = 8
    """Rows per batch on each rank."""
    pad_below: int = 0
    """Pad a row end with fewer free positions than this instead of starting a document there (0: never pad)."""
    lookahead_units: int = 8
    """Groups the packer may look ahead to fill a row end that the next pair does not fit whole."""
    whole_units: bool = False
    """Keep every group no longer than a row whole, not only pairs (single units too)."""
    pin_memory: bool = False
    """Return page-locked tensors (when CUDA is available) for a non-blocking copy to the GPU."""

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ConfigError(f"pack.seq_len must be >= 2, got {self.seq_len}")
        if self.batch_size < 1:
            raise ConfigError(f"pack.batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.pad_below < self.seq_len:
            raise ConfigError(f"pack.pad_below must be in [0, seq_len), got {self.pad_below}")
        if self.lookahead_units < 0:
            raise ConfigError(f"pack.lookahead_units must be >= 0, got {self.lookahead_units}")

    @property
    def tokens_per_batch(self) -> int:
        return self.seq_len * self.batch_size


def head_offsets(n_main_heads: int, n_raw_heads: int) -> list[int]:
    """Offset of each head's target from its position: main heads 1..n_main, then raw heads."""
    if n_main_heads < 1 or n_raw_heads < 0:
        raise ConfigError(f"need n_main_heads >= 1 and n_raw_heads >= 0, got {n_main_heads} and {n_raw_heads}")
    return list(range(1, n_main_heads + n_raw_heads + 1))


@dataclass
class Group:
    """The units of one document, placed together; `paired` when they hold both of its views."""

    units: list[Unit]
    paired: bool

    @property
    def length(self) -> int:
        return sum(len(u.ids) for u in self.units)


@dataclass
class PackStats:
    """What the packer did, in positions and groups (for benchmarks and logs)."""

    positions: int = 0
    padding: int = 0
    pairs_fitting: int = 0  # paired groups no longer than a row
    pairs_cut: int = 0  # ... of which a row end cut (0 unless the look-ahead was exhausted by pad_below)
    pairs_too_long: int = 0  # paired groups longer than a row: always cut
    reordered: int = 0  # groups placed before an earlier one to fill a row end

    def add(self, other: "PackStats") -> "PackStats":
        return PackStats(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))


Draw = Callable[[], Group]


class RowPacker:
    """One row's stream of units; `pop_row` cuts its next row. Its state is the uncut stream and
    the groups drawn but not yet placed."""

    def __init__(self, cfg: PackConfig, lookahead: int):
        self.cfg = cfg
        self.lookahead = lookahead  # ids read beyond the row end: one per head
        self.stats = PackStats()
        self._chunks: deque[tuple[np.ndarray, ...]] = deque()
        self._length = 0
        self._waiting: deque[Group] = deque()
        self._units = 0  # units appended so far: the next unit's stream-wide id
        self._segments = 0  # views appended so far: the next view's stream-wide id

    def __len__(self) -> int:
        return self._length

    @property
    def needed(self) -> int:
        """Stream positions that must be placed before `pop_row`: the row plus its lookahead."""
        return self.cfg.seq_len + self.lookahead

    def fill(self, draw: Draw) -> None:
        """Place groups (drawing new ones as needed) until a row can be cut."""
        while self._length < self.needed:
            self._place_next(draw)

    def pop_row(self) -> dict[str, np.ndarray]:
        """The next row's stream arrays, each (T + H,); the stream keeps everything after the row."""
        if self._length < self.needed:
            raise ValueError(f"row stream holds {self._length} positions, a row needs {self.needed}")
        row = self._take(self.needed)
        self._drop(self.cfg.seq_len)
        return row

    # --- placement --------------------------------------------------------------------------------

    def _place_next(self, draw: Draw) -> None:
        if not self._waiting:
            self._waiting.append(draw())
        room = -self._length % self.cfg.seq_len  # free positions in the current row; 0 at a row start
        if 0 < room < self.cfg.pad_below:
            self._pad(room)
            return
        head = self._waiting[0]
        if room == 0 or head.length <= room or not self._keep_whole(head):
            self._place(self._waiting.popleft())
            return
        filler = self._filler(room, draw)
        if filler is None:
            self._pad(room)
        else:
            self.stats.reordered += 1
            self._place(filler)

    def _keep_whole(self, group: Group) -> bool:
        return (group.paired or self.cfg.whole_units) and group.length <= self.cfg.seq_len

    def _filler(self, room: int, draw: Draw) -> Group | None:
        """The first waiting group after the head that fits the room whole or may be cut, drawing
        new groups one at a time (at most `lookahead_units` waiting behind the head)."""
        i = 1
        while i <= self.cfg.lookahead_units:
            if i == len(self._waiting):
                self._waiting.append(draw())
            group = self._waiting[i]
            if group.length <= room or not self._keep_whole(group):
                del self._waiting[i]
                return group
            i += 1
        return None

    def _place(self, group: Group) -> None:
        if group.paired:
            T = self.cfg.seq_len
            if group.length > T:
                self.stats.pairs_too_long += 1
            else:
                self.stats.pairs_fitting += 1
                self.stats.pairs_cut += self._length // T != (self._length + group.length - 1) // T
        for unit in group.units:
            segments = unit.view.astype(np.int64) + self._segments
            self._push(unit.ids, unit.kind, segments, np.full(len(unit.ids), self._units))
            self._units += 1
            self._segments += int(unit.view.max()) + 1
        self.stats.positions += group.length

    def _pad(self, n: int) -> None:
        self._push(np.full(n, vocab.PAD), np.full(n, Kind.NONE), np.full(n, -1), np.full(n, -1))
        self.stats.padding += n
        self.stats.positions += n

    # --- the stream -------------------------------------------------------------------------------

    def _push(self, ids, kind, seg, unit) -> None:
        arrays = tuple(np.asarray(a, dtype=_DTYPES[name]) for name, a in zip(FIELDS, (ids, kind, seg, unit)))
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
            return {name: np.zeros(0, dtype=_DTYPES[name]) for name in FIELDS}
        return {name: np.concatenate([c[i] for c in taken]) for i, name in enumerate(FIELDS)}

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

    # --- resumption -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        import torch

        stream = self._take(self._length)
        return {
            "units": self._units,
            "segments": self._segments,
            "stats": dict(vars(self.stats)),
            **{name: torch.from_numpy(stream[name].copy()) for name in FIELDS},
            "waiting": groups_state(self._waiting),
        }

    def load_state_dict(self, state: dict) -> None:
        self._chunks.clear()
        self._length = 0
        self._units = int(state["units"])
        self._segments = int(state["segments"])
        self.stats = PackStats(**state["stats"])
        self._push(*(np.asarray(state[name]) for name in FIELDS))
        self._waiting = deque(groups_from_state(state["waiting"]))


def groups_state(groups) -> dict:
    """Groups as a few flat tensors (what torch.save with weights_only can hold)."""
    import torch

    groups = list(groups)
    units = [u for g in groups for u in g.units]

    def cat(name: str, dtype) -> "torch.Tensor":
        return torch.from_numpy(np.concatenate([getattr(u, name) for u in units]).astype(dtype) if units else np.zeros(0, dtype))

    return {
        "paired": torch.tensor([g.paired for g in groups], dtype=torch.bool),
        "units_per_group": torch.tensor([len(g.units) for g in groups], dtype=torch.int64),
        "unit_lengths": torch.tensor([len(u.ids) for u in units], dtype=torch.int64),
        "ids": cat("ids", np.int64),
        "kind": cat("kind", np.int8),
        "view": cat("view", np.int8),
    }


def groups_from_state(state: dict) -> list[Group]:
    arrays = {name: np.asarray(state[name]) for name in ("ids", "kind", "view")}
    bounds = np.concatenate([[0], np.cumsum(np.asarray(state["unit_lengths"]))])
    units = [Unit(*(arrays[n][a:b].copy() for n in ("ids", "kind", "view"))) for a, b in zip(bounds[:-1], bounds[1:])]
    groups, at = [], 0
    for paired, count in zip(np.asarray(state["paired"]).tolist(), np.asarray(state["units_per_group"]).tolist()):
        groups.append(Group(units[at : at + count], paired))
        at += count
    return groups


def stack_rows(rows: list[dict[str, np.ndarray]], **kwargs) -> Batch:
    """Rows from `RowPacker.pop_row` -> a Batch (keywords as for `build_batch`)."""
    return build_batch(*(np.stack([row[name] for row in rows]) for name in FIELDS), **kwargs)


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
