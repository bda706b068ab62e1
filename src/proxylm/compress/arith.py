"""Exact integer arithmetic coding of short messages, with bit-level output.

The neural proxy codes every equal-information window (a few bytes, a few dozen bits at most) on
its own, so this coder is built for short messages, many of them at once:

- Models are integer frequency tables: every symbol has a frequency >= 1 and each table sums to
  2^precision (precision <= 16). No float ever enters the coder, so encoder and decoder agree
  exactly whenever they are handed the same tables.
- The state is an interval [low, low + range) of integers inside [0, 2^62). Coding a symbol with
  cumulative frequency c and frequency f: r = range >> precision; low += r * c; range = r * f.
  This is Witten, Neal and Cleary's update without renormalisation: the interval keeps its
  absolute scale, nothing is shifted out, there are no carries or pending bits, and every number
  stays below 2^62 (numpy int64, one message per row). Truncating to r wastes less than
  2^precision / range of the interval per symbol: nothing while range >> 2^precision.
- A message's code is a B-bit point: an integer v with v * 2^(62 - B) inside the final interval.
  `code_length` gives the smallest B (at most ceil(sum of -log2 p) + 1 plus the truncation loss),
  `grid_point` the smallest such v for a given B. Decoding replays the same integer arithmetic
  from the point (`locate` then `narrow`).
- Capacity: about 62 - precision = 46 bits of information. Once range < 2^precision every
  symbol's interval is empty, so nothing more fits: window coding treats that as the window
  being full; the one-message `encode` raises.

constriction (a well-kept range/ANS coder) emits whole 32-bit words and so cannot cut a stream
into 16-bit windows; the tests check this coder's code lengths against constriction's on the
same quantised tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

STATE_BITS = 62
FULL_RANGE = 1 << STATE_BITS
MAX_PRECISION = 16


class ArithmeticCodeError(ValueError):
    """A code point that does not decode under the given tables (wrong model, corrupted symbols)."""


@dataclass(frozen=True)
class Code:
    """A message's code: `value` written with exactly `bits` bits, most significant first."""

    value: int
    bits: int

    def bit_array(self) -> np.ndarray:
        """The code as an array of 0/1 (uint8), most significant bit first."""
        return np.array([(self.value >> (self.bits - 1 - i)) & 1 for i in range(self.bits)], dtype=np.uint8)


def initial_state(n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` fresh intervals [0, 2^62): (low, range) as int64 arrays."""
    return np.zeros(n, dtype=np.int64), np.full(n, FULL_RANGE, dtype=np.int64)


def narrow(low, range_, cum, freq, precision: int):
    """The sub-interval of the coded symbol. Works on Python ints and on int64 arrays alike."""
    r = range_ >> precision
    return low + r * cum, r * freq


def grid_point(low, range_, bits: int):
    """(v, fits): the smallest `bits`-bit point v with v * 2^(62 - bits) >= low, and whether it lies
    inside [low, low + range). An empty interval (range 0) never fits."""
    shift = STATE_BITS - bits
    point = -((-low) >> shift)  # ceil(low / 2^shift); >> floors, also for negative numbers
    return point, (point << shift) < low + range_


def locate(low, range_, point, bits: int, precision: int):
    """The cumulative-frequency target in [0, 2^precision) that `point` selects at this step, or -1
    where the point lies outside every symbol's interval (or no symbol fits any more)."""
    low, range_, point = (np.asarray(a, dtype=np.int64) for a in (low, range_, point))
    r = range_ >> precision
    offset = (point << (STATE_BITS - bits)) - low
    target = offset // np.maximum(r, 1)
    ok = (r > 0) & (offset >= 0) & (target < (1 << precision))
    return np.where(ok, target, -1)


def code_length(low: int, range_: int) -> int:
    """The fewest bits B whose grid has a point inside [low, low + range)."""
    for bits in range(STATE_BITS + 1):
        if grid_point(low, range_, bits)[1]:
            return bits
    raise ArithmeticCodeError("empty interval: the message does not fit in this coder's 62-bit state")


def cumulative(tables: np.ndarray) -> np.ndarray:
    """Frequency tables (..., A) -> cumulative tables (..., A + 1) starting at 0 (int64)."""
    tables = np.asarray(tables, dtype=np.int64)
    cum = np.zeros(tables.shape[:-1] + (tables.shape[-1] + 1,), dtype=np.int64)
    np.cumsum(tables, axis=-1, out=cum[..., 1:])
    return cum


def check_tables(tables: np.ndarray, precision: int) -> None:
    """Raise ValueError unless every table has all frequencies >= 1 and sums to 2^precision."""
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in 1..{MAX_PRECISION}, got {precision}")
    tables = np.asarray(tables)
    if tables.size and tables.min() < 1:
        raise ValueError("a frequency table has a zero frequency: every symbol needs at least 1")
    totals = tables.sum(axis=-1)
    if (totals != 1 << precision).any():
        raise ValueError(f"a frequency table sums to {int(totals.flat[np.flatnonzero(totals != 1 << precision)[0]])}, not 2^{precision}")


def encode(symbols: Sequence[int], tables: np.ndarray, precision: int) -> Code:
    """The shortest code of one message; tables[i] (A,) is the model of symbols[i]."""
    check_tables(tables, precision)
    cum = cumulative(tables)
    low, range_ = 0, FULL_RANGE
    for i, s in enumerate(symbols):
        low, range_ = narrow(low, range_, int(cum[i, s]), int(tables[i, s]), precision)
        if range_ == 0:
            raise ArithmeticCodeError(f"message too long: symbol {i} does not fit in the 62-bit state")
    bits = code_length(low, range_)
    return Code(int(grid_point(low, range_, bits)[0]), bits)


def decode(code: Code, length: int, next_table: Callable[[list[int]], np.ndarray], precision: int) -> list[int]:
    """`length` symbols from a code; next_table(prefix) gives the model of the next symbol."""
    low, range_ = 0, FULL_RANGE
    out: list[int] = []
    for i in range(length):
        table = np.asarray(next_table(out), dtype=np.int64)
        check_tables(table, precision)
        target = int(locate(low, range_, code.value, code.bits, precision))
        if target < 0:
            raise ArithmeticCodeError(f"code {code.value:#x}/{code.bits} bits does not decode at symbol {i}")
        cum = cumulative(table)
        s = int(np.searchsorted(cum, target, side="right")) - 1
        low, range_ = narrow(low, range_, int(cum[s]), int(table[s]), precision)
        out.append(s)
    return out
