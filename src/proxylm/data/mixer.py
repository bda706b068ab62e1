"""Mixer: one prepared document -> the views the model trains on (DESIGN.md section 4).

Design choices:
- Modes and orders are enums. The four layouts, for a document with bytes B and symbols S:
      vanilla      <bos> B <eos>                                   or  <bos> S <eos>
      sentinel     <bos> <raw> B </raw> <eos>                      or  <bos> <compressed> S </compressed> <eos>
      translation  <bos> <raw> B </raw> <compressed> S </compressed> <eos>   (one document; order per `Order`)
      parallel     <bos> <raw> B </raw> <eos>  <bos> <compressed> S </compressed> <eos>   (two documents)
  A document of a paired mode that is not drawn as a pair is laid out as in `sentinel`.
- Rate recalibration keeps the share of compressed views (a pair counts one raw and one
  compressed view) equal to p in the paired modes: if p > 0.5 every raw draw becomes a pair and a
  document is compressed-only with probability y = 2 - 1/p; otherwise every compressed draw
  becomes a pair and y = p / (1 - p) is the probability of a pair.
- Randomness is counter-based: a document's draws are a hash of (seed, epoch, its place in the
  epoch) and never on the rate, so resumption and every rank agree on them without any saved
  generator state, and a run that drops compressed views (`drop_compressed`, the "raw only"
  control) sees exactly the raw views of the matching proxy run.
- `vanilla` at a rate strictly between 0 and 1 mixes unmarked views; the baselines use 0 or 1.
- bos and eos frame the document and belong to no view (`Kind.NONE`); for the multi-symbol head
  masks they join the view next to them (bos the first, eos the last), so a head may predict from
  bos into the first view and from the last view into eos, but never across two views.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

import numpy as np

from proxylm import vocab
from proxylm.config import ConfigError


class Mode(Enum):
    VANILLA = "vanilla"  # one view, no sentinels: the plain byte or token model
    SENTINEL = "sentinel"  # one view between its sentinels
    TRANSLATION = "translation"  # both views of a document in one context
    PARALLEL = "parallel"  # both views in one sequence, as two documents that cannot attend to each other

    @property
    def paired(self) -> bool:
        return self in (Mode.TRANSLATION, Mode.PARALLEL)


class Order(Enum):
    RAW_FIRST = "raw-first"
    COMPRESSED_FIRST = "compressed-first"
    RANDOM = "random"  # a fair coin per pair


class Kind(IntEnum):
    """What a position belongs to: no view (bos, eos, padding), a raw view or a compressed view."""

    NONE = 0
    RAW = 1
    COMPRESSED = 2


@dataclass(frozen=True)
class MixPoint:
    """How documents are mixed at one training step (the schedule's output)."""

    mode: Mode
    order: Order
    rate: float  # p, the share of compressed views among all views


@dataclass
class MixConfig:
    seed: int = 0
    """Seeds the document order of every epoch and every document's view draws."""
    drop_compressed: bool = False
    """The "raw only" control: make the same draws as the proxy run, then drop every compressed
    view (a pair keeps its raw view, a compressed-only document is skipped)."""

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"mix.seed must be an integer, got {self.seed!r}")
        if not isinstance(self.drop_compressed, bool):
            raise ConfigError(f"mix.drop_compressed must be true or false, got {self.drop_compressed!r}")


@dataclass(frozen=True)
class Plan:
    """The views of one document: each inner tuple is one attention document, in order."""

    units: tuple[tuple[Kind, ...], ...]
    sentinels: bool

    def unit_lengths(self, raw_length: int, symbols_length: int) -> list[int]:
        """Ids of each unit this plan produces, without building them."""
        body = {Kind.RAW: raw_length, Kind.COMPRESSED: symbols_length}
        per_view = 2 if self.sentinels else 0
        return [2 + sum(body[k] + per_view for k in unit) for unit in self.units]

    def count(self, kind: Kind) -> int:
        return sum(unit.count(kind) for unit in self.units)


@dataclass
class Unit:
    """One attention document ready for the packer."""

    ids: np.ndarray  # (L,) int64
    kind: np.ndarray  # (L,) int8 Kind of each position
    view: np.ndarray  # (L,) int8 view ordinal within the unit; bos joins the first view, eos the last


def compressed_probability(mode: Mode, rate: float) -> float:
    """Per-document probability of the compressed-leaning draw, recalibrated for paired modes.

    For p > 0.5 it is the probability of a compressed-only document (else a pair); for p <= 0.5
    the probability of a pair (else raw only). Unpaired modes use p itself.
    """
    if not mode.paired:
        return rate
    if rate > 0.5:
        return 2.0 - 1.0 / rate
    return rate / (1.0 - rate)


def plan_views(point: MixPoint, u_view: float, u_order: float, drop_compressed: bool = False) -> Plan:
    """The views of one document from its two uniform draws in [0, 1)."""
    y = compressed_probability(point.mode, point.rate)
    hit = u_view < y
    if not point.mode.paired:
        views: tuple[Kind, ...] = (Kind.COMPRESSED,) if hit else (Kind.RAW,)
    elif point.rate > 0.5:
        views = (Kind.COMPRESSED,) if hit else _pair(point.order, u_order)
    else:
        views = _pair(point.order, u_order) if hit else (Kind.RAW,)
    units = ((views,) if point.mode is not Mode.PARALLEL else tuple((k,) for k in views))
    if drop_compressed:
        units = tuple(kept for unit in units if (kept := tuple(k for k in unit if k is Kind.RAW)))
    return Plan(units=units, sentinels=point.mode is not Mode.VANILLA)


def _pair(order: Order, u_order: float) -> tuple[Kind, Kind]:
    raw_first = order is Order.RAW_FIRST or (order is Order.RANDOM and u_order < 0.5)
    return (Kind.RAW, Kind.COMPRESSED) if raw_first else (Kind.COMPRESSED, Kind.RAW)


_OPEN = {Kind.RAW: vocab.RAW_OPEN, Kind.COMPRESSED: vocab.COMPRESSED_OPEN}
_CLOSE = {Kind.RAW: vocab.RAW_CLOSE, Kind.COMPRESSED: vocab.COMPRESSED_CLOSE}


def build_units(plan: Plan, raw: np.ndarray, symbols: np.ndarray) -> list[Unit]:
    """Lay out a plan's views as ids (the layouts in the module docstring)."""
    bodies = {}
    if plan.count(Kind.RAW):
        bodies[Kind.RAW] = vocab.bytes_to_ids(np.asarray(raw, dtype=np.uint8))
    if plan.count(Kind.COMPRESSED):
        bodies[Kind.COMPRESSED] = vocab.symbols_to_ids(symbols)
    return [_build_unit(views, bodies, plan.sentinels) for views in plan.units]


def _build_unit(views: tuple[Kind, ...], bodies: dict[Kind, np.ndarray], sentinels: bool) -> Unit:
    parts = [np.array([vocab.BOS])]
    kinds = [Kind.NONE]
    ordinals = [0]
    for ordinal, kind in enumerate(views):
        body = bodies[kind]
        if sentinels:
            body = np.concatenate([[_OPEN[kind]], body, [_CLOSE[kind]]])
        parts.append(body)
        kinds.append(kind)
        ordinals.append(ordinal)
    parts.append(np.array([vocab.EOS]))
    kinds.append(Kind.NONE)
    ordinals.append(len(views) - 1)
    lengths = [len(p) for p in parts]
    return Unit(
        ids=np.concatenate(parts).astype(np.int64),
        kind=np.repeat(np.array(kinds, dtype=np.int8), lengths),
        view=np.repeat(np.array(ordinals, dtype=np.int8), lengths),
    )


class Mixer:
    """Turns documents into units under a MixPoint, given each document's two uniform draws (`uniforms`)."""

    def __init__(self, cfg: MixConfig):
        self.cfg = cfg

    def plan(self, point: MixPoint, u_view: float, u_order: float) -> Plan:
        return plan_views(point, u_view, u_order, self.cfg.drop_compressed)

    def full_plan(self, point: MixPoint, u_view: float, u_order: float) -> Plan:
        """The plan the matching proxy run makes (compressed views kept)."""
        return plan_views(point, u_view, u_order, drop_compressed=False)

    def mix(self, raw: np.ndarray, symbols: np.ndarray, point: MixPoint, u_view: float, u_order: float) -> list[Unit]:
        return build_units(self.plan(point, u_view, u_order), raw, symbols)


# --- counter-based draws ------------------------------------------------------------------------

_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment (the golden ratio in 64 bits)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1

# Streams: independent draws for the same (seed, epoch, position).
STREAM_ORDER_OF_DOCUMENTS = 1
STREAM_VIEW = 2
STREAM_PAIR_ORDER = 3


def hash64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective mix of uint64 values (arrays wrap mod 2**64 silently)."""
    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def stream_key(seed: int, epoch: int, stream: int) -> np.ndarray:
    """A (1,) uint64 key naming one stream of draws."""
    key = np.array([seed & _MASK64], dtype=np.uint64)
    for part in (epoch, stream):
        key = hash64(key + _GAMMA * np.array([part & _MASK64], dtype=np.uint64))
    return key


def uniforms(seed: int, epoch: int, stream: int, positions: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1), one per position: the positions-th outputs of a splitmix64 stream."""
    counters = np.asarray(positions, dtype=np.uint64) + np.uint64(1)
    bits = hash64(stream_key(seed, epoch, stream) + _GAMMA * counters)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
