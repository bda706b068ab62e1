"""Loader: prepared shards -> per-rank batches, the same global stream at any world size, resumable exactly.

    loader = Loader(Shards.open("data/bpe"), Schedule(proxy_default(), total_steps=5000),
                    MixConfig(seed=0), PackConfig(seq_len=1024, batch_size=8),
                    n_main_heads=1, n_raw_heads=1, rank=rank, world_size=world, grad_accum=accum)
    for step in range(start, total):
        for micro in range(accum):
            batch = loader.next_batch(step)
    ckpt["loader"] = loader.state_dict()      # per rank

Design choices:
- Rows, not ranks, own the data. A step's global batch has R = batch_size x world_size x
  grad_accum rows; global row g reads its own stream of documents: places g, g + R, g + 2R, ...
  of the endless sequence of epochs, each epoch a seeded permutation of the N stored pieces
  (place i is piece perm_e(i mod N) of epoch e = i // N). So every epoch visits each piece once,
  the rows of one batch come from R different pieces, and a long document no longer fills
  consecutive batches: it is one piece in one row at a time.
- Ranks take slices: micro-batch a of rank r holds global rows (a * W + r) * B + b, b < B. A run
  with the same global batch (B x W x A rows) sees the same rows at the same steps whatever W and
  A are: 2 ranks x 1 micro-batch equal 1 rank x 2 micro-batches row for row.
- Each row packs its documents with its own `RowPacker` (whole pairs, look-ahead filling,
  continuation into the same row of the next step). The schedule's point for step s applies to
  the documents a row draws while filling its row of step s.
- Order and draws are counter-based (a keyed Feistel permutation with cycle walking; splitmix64
  uniforms keyed by seed, epoch and place), so nothing of size O(documents) is held and the state
  is small: per row, the documents drawn so far and its packer's uncut stream. A loader restored
  from a state taken after a step returns exactly the batches of the uninterrupted run.
- `drop_compressed` (the raw-only control): each row replays the matching proxy run's row (a
  shadow packer with both views, at the proxy run's own step count) and packs only the raw views
  of the documents that row drew, so the two runs see the same raw views of the same documents
  under any schedule, at fewer positions.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import numpy as np

from proxylm.data.batch import Batch
from proxylm.data.mixer import (
    STREAM_ORDER_OF_DOCUMENTS,
    STREAM_PAIR_ORDER,
    STREAM_VIEW,
    Kind,
    MixConfig,
    Mixer,
    Plan,
    build_units,
    hash64,
    stream_key,
    uniforms,
)
from proxylm.data.packer import Group, PackConfig, PackStats, RowPacker, groups_from_state, groups_state, head_offsets, stack_rows
from proxylm.data.schedule import Schedule
from proxylm.errors import UserError

STATE_VERSION = 2
_BLOCK = 64  # a row's next documents whose order and draws are computed together


class DocumentSource(Protocol):
    """What the loader needs of `proxylm.data.shards.Shards`."""

    def __len__(self) -> int: ...
    def raw(self, i: int) -> np.ndarray: ...
    def symbols(self, i: int) -> np.ndarray: ...


class LoaderStateError(UserError, ValueError):
    """A saved loader state that does not fit this loader; the message names the difference."""


def permuted(positions: np.ndarray, n: int, key: np.ndarray) -> np.ndarray:
    """The images of `positions` under a keyed pseudo-random permutation of range(n).

    A 4-round Feistel network on the smallest power of 4 >= n is a permutation of that domain;
    cycle walking (re-applying it until the value falls below n) restricts it to range(n).
    The domain is < 4n, so a few re-applications suffice.
    """
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    round_keys = [hash64(key + np.uint64(r + 1)) for r in range(4)]

    def feistel(x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half), x & mask
        for round_key in round_keys:
            left, right = right, left ^ (hash64(right ^ round_key) & mask)
        return (left << np.uint64(half)) | right

    out = feistel(np.asarray(positions, dtype=np.uint64))
    outside = out >= np.uint64(n)
    while outside.any():
        out[outside] = feistel(out[outside])
        outside = out >= np.uint64(n)
    return out.astype(np.int64)


class _Row:
    """One global row: its documents, their views under the schedule, and its packer."""

    def __init__(self, loader: "Loader", index: int, raw_only: bool):
        self.loader = loader
        self.index = index  # the global row g
        self.drawn = 0  # documents this row has drawn: its next place is drawn * R + g
        self._block: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None  # a cache, rebuilt on demand
        self.packer = RowPacker(loader.pack_cfg, loader.lookahead)
        self.shadow: _Row | None = _Row(loader, index, raw_only=False) if raw_only else None  # the proxy run's row
        self.proxy_step: int | None = None  # raw-only: the step the shadow (the proxy run's row) is at
        self.raw_groups: deque[Group] = deque()  # raw-only: raw views the shadow drew, not yet packed

    def next_row(self, step: int) -> dict[str, np.ndarray]:
        if self.shadow is None:
            self.packer.fill(lambda: self._draw(step))
        else:
            if self.proxy_step is None:
                self.proxy_step = step
            self.packer.fill(self._next_raw_group)
        return self.packer.pop_row()

    def _draw(self, step: int, raw_groups: deque | None = None) -> Group:
        doc, u_view, u_order = self._next_draw()
        point = self.loader.schedule.at(step)
        plan = self.loader.mixer.full_plan(point, u_view, u_order)
        shards = self.loader.shards
        raw, symbols = shards.raw(doc), shards.symbols(doc)  # views: nothing read yet
        if raw_groups is not None:
            kept = self.loader.mixer.plan(point, u_view, u_order)
            if kept.units:
                raw_groups.append(_group(kept, raw, symbols))
        return _group(plan, raw, symbols)

    def _next_draw(self) -> tuple[int, float, float]:
        start = self.drawn - self.drawn % _BLOCK
        if self._block is None or self._block[0] != start:
            places = np.arange(start, start + _BLOCK) * self.loader.rows_per_step + self.index
            self._block = (start, *self.loader.draws(places))
        i = self.drawn - start
        self.drawn += 1
        return int(self._block[1][i]), float(self._block[2][i]), float(self._block[3][i])

    def _next_raw_group(self) -> Group:
        shadow = self.shadow
        while not self.raw_groups:
            step = self.proxy_step
            if self.loader.schedule.at(step).rate >= 1.0:
                raise UserError(
                    f"mix.drop_compressed at step {step}: the schedule's rate is 1, so every document would be dropped"
                )
            shadow.packer.fill(lambda: shadow._draw(step, self.raw_groups))
            shadow.packer.pop_row()
            self.proxy_step += 1
        return self.raw_groups.popleft()

    def state_dict(self) -> dict:
        state = {"drawn": self.drawn, "packer": self.packer.state_dict()}
        if self.shadow is not None:
            state |= {"proxy_step": self.proxy_step, "shadow": self.shadow.state_dict(),
                      "raw_groups": groups_state(self.raw_groups)}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.drawn = int(state["drawn"])
        self._block = None
        self.packer.load_state_dict(state["packer"])
        if self.shadow is not None:
            self.proxy_step = None if state["proxy_step"] is None else int(state["proxy_step"])
            self.shadow.load_state_dict(state["shadow"])
            self.raw_groups = deque(groups_from_state(state["raw_groups"]))


def _group(plan: Plan, raw: np.ndarray, symbols: np.ndarray) -> Group:
    views = plan.count(Kind.RAW) + plan.count(Kind.COMPRESSED)
    return Group(build_units(plan, raw, symbols), paired=views > 1)


class Loader:
    """Reads this rank's rows of every global batch: documents, views on the schedule, packed rows."""

    def __init__(
        self,
        shards: DocumentSource,
        schedule: Schedule,
        mix: MixConfig,
        pack: PackConfig,
        *,
        n_main_heads: int = 1,
        n_raw_heads: int = 0,
        rank: int = 0,
        world_size: int = 1,
        grad_accum: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside a world of {world_size}")
        if grad_accum < 1:
            raise UserError(f"grad_accum must be >= 1, got {grad_accum}")
        if len(shards) < 1:
            raise UserError("the shards hold no documents")
        self.shards = shards
        self.schedule = schedule
        self.mix_cfg = mix
        self.pack_cfg = pack
        self.n_main_heads = n_main_heads
        self.n_raw_heads = n_raw_heads
        self.lookahead = len(head_offsets(n_main_heads, n_raw_heads))
        self.rank = rank
        self.world_size = world_size
        self.grad_accum = grad_accum  # micro-batches per optimiser step: the schedule advances once per step
        self.mixer = Mixer(mix)
        self.documents = len(shards)
        self.rows_per_step = pack.batch_size * world_size * grad_accum  # R, the global batch in rows
        B = pack.batch_size
        self.rows = [
            [_Row(self, (micro * world_size + rank) * B + b, mix.drop_compressed) for b in range(B)]
            for micro in range(grad_accum)
        ]
        self.micro = 0  # the next micro-batch of the current step

    def next_batch(self, step: int) -> Batch:
        """The next micro-batch of `step` (grad_accum calls per step, in order)."""
        rows = [row.next_row(step) for row in self.rows[self.micro]]
        self.micro = (self.micro + 1) % self.grad_accum
        return stack_rows(rows, seq_len=self.pack_cfg.seq_len, n_main_heads=self.n_main_heads,
                          n_raw_heads=self.n_raw_heads, pin_memory=self.pack_cfg.pin_memory)

    def draws(self, places: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pieces at global `places` of the endless sequence of epochs (place i is place i mod N of
        epoch i // N) and their two uniform draws (view, pair order)."""
        epochs, at = np.divmod(np.asarray(places, dtype=np.int64), self.documents)
        docs, u_view, u_order = np.empty(len(at), np.int64), np.empty(len(at)), np.empty(len(at))
        seed = self.mix_cfg.seed
        for epoch in np.unique(epochs).tolist():
            mine = epochs == epoch
            docs[mine] = permuted(at[mine], self.documents, stream_key(seed, epoch, STREAM_ORDER_OF_DOCUMENTS))
            u_view[mine] = uniforms(seed, epoch, STREAM_VIEW, at[mine])
            u_order[mine] = uniforms(seed, epoch, STREAM_PAIR_ORDER, at[mine])
        return docs, u_view, u_order

    @property
    def documents_drawn(self) -> int:
        """Pieces this rank's rows have drawn so far (a raw-only row counts the proxy run's draws)."""
        return sum((row.shadow or row).drawn for micro in self.rows for row in micro)

    @property
    def stats(self) -> PackStats:
        """Packing figures summed over this rank's rows (padding, pairs kept whole, reorders)."""
        total = PackStats()
        for micro in self.rows:
            for row in micro:
                total = total.add(row.packer.stats)
        return total

    # --- resumption -----------------------------------------------------------------------------

    def _identity(self) -> dict:
        return {
            "seed": self.mix_cfg.seed,
            "drop_compressed": self.mix_cfg.drop_compressed,
            "documents": self.documents,
            "rank": self.rank,
            "world_size": self.world_size,
            "grad_accum": self.grad_accum,
            "seq_len": self.pack_cfg.seq_len,
            "batch_size": self.pack_cfg.batch_size,
            "pad_below": self.pack_cfg.pad_below,
            "lookahead_units": self.pack_cfg.lookahead_units,
            "heads": self.lookahead,
        }

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            **self._identity(),
            "micro": self.micro,
            "rows": [row.state_dict() for micro in self.rows for row in micro],
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise LoaderStateError(
                f"loader state version {state.get('version')!r} is not {STATE_VERSION} "
                "(saved by an older proxylm: start the run afresh)"
            )
        for key, value in self._identity().items():
            if state.get(key) != value:
                raise LoaderStateError(
                    f"loader state was saved with {key}={state.get(key)!r}, this loader has {key}={value!r}"
                )
        self.micro = int(state["micro"])
        rows = [row for micro in self.rows for row in micro]
        for row, row_state in zip(rows, state["rows"], strict=True):
            row.load_state_dict(row_state)
