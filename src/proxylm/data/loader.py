"""Loader: prepared shards -> per-rank batches, resumable exactly.

    loader = Loader(Shards.open("data/bpe"), Schedule(proxy_default(), total_steps=5000),
                    MixConfig(seed=0), PackConfig(seq_len=1024, batch_size=8),
                    n_main_heads=1, n_raw_heads=1, rank=rank, world_size=world)
    for step in range(start, total):
        batch = loader.next_batch(step)
    ckpt["loader"] = loader.state_dict()      # per rank

Design choices:
- Order: every epoch visits the documents in a seeded pseudo-random order computed on demand (a
  keyed Feistel permutation with cycle walking), so nothing of size O(documents) is ever held:
  with memory-mapped shards a rank's RSS does not grow with the corpus.
- Ranks: rank r takes epoch positions r, r + W, r + 2W, ... of that order (W = world size), so
  ranks see disjoint documents; the last N mod W positions of each epoch are skipped, so every
  rank's epoch has N // W documents and ranks change epoch together. Epochs reshuffle.
- A document's views are drawn from (seed, epoch, position) (see mixer), so the state is just
  the epoch, the cursor within it and the packer's uncut stream: a loader restored from a state
  taken after step s returns exactly the batches of the uninterrupted run from step s + 1 on.
- The schedule's point for step s applies to the documents mixed while filling batch s.
  With `drop_compressed` the batches are shorter than the proxy run's, so the loader follows the
  step the matching proxy run would be at (`schedule_step`), replaying its stream length: the
  two runs draw the same views for the same documents under any schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from proxylm.data.batch import Batch
from proxylm.data.mixer import (
    STREAM_ORDER_OF_DOCUMENTS,
    STREAM_PAIR_ORDER,
    STREAM_VIEW,
    build_units,
    MixConfig,
    Mixer,
    MixPoint,
    Plan,
    hash64,
    stream_key,
    uniforms,
)
from proxylm.data.packer import Packer, PackConfig, padded_length
from proxylm.data.schedule import Schedule
from proxylm.errors import UserError

STATE_VERSION = 1
_BLOCK = 512  # epoch positions whose order and draws are computed together


class DocumentSource(Protocol):
    """What the loader needs of `proxylm.data.shards.Shards`."""

    def __len__(self) -> int: ...
    def raw(self, i: int) -> np.ndarray: ...
    def symbols(self, i: int) -> np.ndarray: ...
    def raw_length(self, i: int) -> int: ...
    def symbols_length(self, i: int) -> int: ...


@dataclass
class _Draws:
    """Documents and view draws of `_BLOCK` consecutive positions of this rank's epoch."""

    epoch: int
    start: int
    docs: np.ndarray
    u_view: np.ndarray
    u_order: np.ndarray


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


class Loader:
    """Reads this rank's documents, mixes their views on the schedule, packs batches."""

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
        if len(shards) < world_size:
            raise UserError(f"the shards hold {len(shards)} documents, fewer than the {world_size} ranks")
        self.shards = shards
        self.schedule = schedule
        self.mix_cfg = mix
        self.pack_cfg = pack
        self.rank = rank
        self.world_size = world_size
        self.grad_accum = grad_accum  # batches per optimiser step: the schedule advances once per step
        self.mixer = Mixer(mix)
        self.packer = Packer(pack, n_main_heads, n_raw_heads)
        self.documents = len(shards)
        self.per_epoch = self.documents // world_size  # documents per rank per epoch
        self.epoch = 0
        self.cursor = 0  # next position of this rank's share of the epoch
        self.proxy_step: int | None = None  # drop_compressed: the batch the proxy run is at (counted in batches)
        self.proxy_length = 0  # drop_compressed: the proxy run's uncut stream length
        self._block: _Draws | None = None  # a cache, rebuilt from (epoch, cursor) on demand

    # --- the public loop ------------------------------------------------------------------------

    def next_batch(self, step: int) -> Batch:
        """The batch of `step`. With drop_compressed, only the first call's step counts: from there
        the loader follows the step of the matching proxy run (`schedule_step`)."""
        if self.mix_cfg.drop_compressed and self.proxy_step is None:
            self.proxy_step = step * self.grad_accum
        while not self.packer.ready():
            self._add_document(step)
        return self.packer.pop_batch()

    @property
    def schedule_step(self) -> int | None:
        """The step whose schedule point applies to the next document (drop_compressed only)."""
        return None if self.proxy_step is None else self.proxy_step // self.grad_accum

    @property
    def documents_seen(self) -> int:
        """Documents this rank has drawn so far, over all epochs."""
        return self.epoch * self.per_epoch + self.cursor

    # --- documents ------------------------------------------------------------------------------

    def _add_document(self, step: int) -> None:
        doc, u_view, u_order = self._next_draw()
        point = self._point(step)
        if self.mix_cfg.drop_compressed:
            self._follow_proxy_run(doc, self.mixer.full_plan(point, u_view, u_order))
        plan = self.mixer.plan(point, u_view, u_order)
        for unit in build_units(plan, self.shards.raw(doc), self.shards.symbols(doc)):  # views: nothing read yet
            self.packer.add(unit)

    def _follow_proxy_run(self, doc: int, full_plan: Plan) -> None:
        """Grow the proxy run's stream by what it would have packed for this document."""
        for length in full_plan.unit_lengths(self.shards.raw_length(doc), self.shards.symbols_length(doc)):
            self.proxy_length = padded_length(self.proxy_length, length, self.pack_cfg)

    def _point(self, step: int) -> MixPoint:
        if self.mix_cfg.drop_compressed:
            while self.proxy_length >= self.packer.needed:  # the proxy run has cut a batch
                self.proxy_length -= self.pack_cfg.tokens_per_batch
                self.proxy_step += 1
            step = self.proxy_step // self.grad_accum
        point = self.schedule.at(step)
        if self.mix_cfg.drop_compressed and point.rate >= 1.0:
            raise UserError(
                f"mix.drop_compressed at step {step}: the schedule's rate is 1, so every document would be dropped"
            )
        return point

    def _next_draw(self) -> tuple[int, float, float]:
        if self.cursor >= self.per_epoch:
            self.epoch += 1
            self.cursor = 0
        start = self.cursor - self.cursor % _BLOCK
        if self._block is None or (self._block.epoch, self._block.start) != (self.epoch, start):
            self._block = self._draw_block(self.epoch, start)
        i = self.cursor - start
        self.cursor += 1
        return int(self._block.docs[i]), float(self._block.u_view[i]), float(self._block.u_order[i])

    def _draw_block(self, epoch: int, start: int) -> "_Draws":
        local = np.arange(start, min(start + _BLOCK, self.per_epoch))
        positions = local * self.world_size + self.rank  # places in the epoch's global order
        seed = self.mix_cfg.seed
        return _Draws(
            epoch=epoch,
            start=start,
            docs=permuted(positions, self.documents, stream_key(seed, epoch, STREAM_ORDER_OF_DOCUMENTS)),
            u_view=uniforms(seed, epoch, STREAM_VIEW, positions),
            u_order=uniforms(seed, epoch, STREAM_PAIR_ORDER, positions),
        )

    # --- resumption -----------------------------------------------------------------------------

    def _identity(self) -> dict:
        return {
            "seed": self.mix_cfg.seed,
            "drop_compressed": self.mix_cfg.drop_compressed,
            "documents": self.documents,
            "rank": self.rank,
            "world_size": self.world_size,
            "seq_len": self.pack_cfg.seq_len,
            "batch_size": self.pack_cfg.batch_size,
            "pad_below": self.pack_cfg.pad_below,
            "heads": self.packer.lookahead,
        }

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            **self._identity(),
            "epoch": self.epoch,
            "cursor": self.cursor,
            "proxy_step": self.proxy_step,
            "proxy_length": self.proxy_length,
            "packer": self.packer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise LoaderStateError(f"loader state version {state.get('version')!r} is not {STATE_VERSION}")
        for key, value in self._identity().items():
            if state.get(key) != value:
                raise LoaderStateError(
                    f"loader state was saved with {key}={state.get(key)!r}, this loader has {key}={value!r}"
                )
        self.epoch = int(state["epoch"])
        self.cursor = int(state["cursor"])
        self.proxy_step = None if state["proxy_step"] is None else int(state["proxy_step"])
        self.proxy_length = int(state["proxy_length"])
        self.packer.load_state_dict(state["packer"])
        self._block = None
