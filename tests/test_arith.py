"""The exact integer arithmetic coder: exact decoding, near-ideal code lengths, agreement with constriction."""

from __future__ import annotations

import math

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxylm.compress import arith


def random_table(rng: np.random.Generator, alphabet: int, precision: int, skew: float = 3.0) -> np.ndarray:
    """A frequency table over `alphabet` symbols, every entry >= 1, summing to 2^precision."""
    weights = np.exp(rng.normal(0.0, skew, alphabet))
    spare = (1 << precision) - alphabet
    table = 1 + np.floor(weights / weights.sum() * spare).astype(np.int64)
    table[np.argmax(weights)] += (1 << precision) - table.sum()
    return table


def draw_message(rng: np.random.Generator, tables: np.ndarray) -> list[int]:
    return [int(rng.choice(len(t), p=t / t.sum())) for t in tables]


def ideal_bits(message: list[int], tables: np.ndarray, precision: int) -> float:
    return sum(precision - math.log2(int(t[s])) for s, t in zip(message, tables))


@st.composite
def messages(draw):
    precision = draw(st.integers(8, 16))
    alphabet = draw(st.integers(2, min(300, 1 << precision)))
    length = draw(st.integers(0, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    skew = draw(st.floats(0.0, 6.0))
    tables = np.array([random_table(rng, alphabet, precision, skew) for _ in range(length)], dtype=np.int64).reshape(length, alphabet)
    return precision, tables, draw_message(rng, tables)


@settings(max_examples=300, deadline=None)
@given(messages())
def test_decode_is_exact_and_code_length_within_two_bits_of_the_ideal(case):
    precision, tables, message = case
    code = arith.encode(message, tables, precision)
    assert arith.decode(code, len(message), lambda prefix: tables[len(prefix)], precision) == message
    assert code.bits <= ideal_bits(message, tables, precision) + 2
    assert 0 <= code.value < (1 << code.bits)


def test_extreme_symbols_round_trip():
    precision = 16
    table = np.ones(256, dtype=np.int64)
    table[7] = (1 << precision) - 255  # one very likely symbol, 255 of probability 2^-16
    for message in ([0], [255], [7] * 40, [0, 255, 7], [255, 7, 7, 255]):  # up to 32 bits
        tables = np.stack([table] * len(message))
        code = arith.encode(message, tables, precision)
        assert arith.decode(code, len(message), lambda prefix: table, precision) == message
        assert code.bits <= ideal_bits(message, tables, precision) + 2


def test_adaptive_model_round_trip():
    """The decoder asks for each table given the symbols so far, as the neural proxy's model does."""
    precision = 12

    def model(prefix: list[int]) -> np.ndarray:
        table = np.ones(16, dtype=np.int64)
        table[(prefix[-1] + 1) % 16 if prefix else 0] += (1 << precision) - 16  # favours the successor
        return table

    message = [0, 1, 2, 3, 9, 10, 11, 0]
    tables = []
    for i in range(len(message)):
        tables.append(model(message[:i]))
    code = arith.encode(message, np.stack(tables), precision)
    assert arith.decode(code, len(message), model, precision) == message


def test_a_message_beyond_the_state_raises():
    table = np.ones(256, dtype=np.int64) * 256  # uniform: 8 bits per symbol, the state holds ~46
    with pytest.raises(arith.ArithmeticCodeError, match="too long"):
        arith.encode([1] * 8, np.stack([table] * 8), 16)


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="zero frequency"):
        arith.check_tables(np.array([0, 1 << 16]), 16)
    with pytest.raises(ValueError, match="sums to"):
        arith.check_tables(np.array([1, 2, 3]), 16)


def test_locate_flags_points_outside_every_interval():
    low, range_ = arith.initial_state(3)
    low, range_ = arith.narrow(low, range_, np.array([0, 100, 0]), np.array([10, 10, 1]), 8)
    # a point inside, a point below the interval, and an interval too narrow to narrow further
    inside = arith.grid_point(low, range_, 16)[0]
    points = np.array([inside[0], 0, inside[2]])
    narrow_low, narrow_range = low.copy(), range_.copy()
    narrow_range[2] = 100  # below 2^8: no symbol fits any more
    target = arith.locate(narrow_low, narrow_range, points, 16, 8)
    assert target[0] >= 0 and target[1] == -1 and target[2] == -1


def test_bit_array_writes_the_code_most_significant_bit_first():
    assert arith.Code(value=0b1011, bits=6).bit_array().tolist() == [0, 0, 1, 0, 1, 1]
    assert arith.Code(value=0, bits=0).bit_array().size == 0


def constriction_bits(messages_: list[list[int]], tables: list[np.ndarray]) -> int:
    """Bits constriction's range coder needs for the symbols of all messages, as one stream."""
    encoder = constriction.stream.queue.RangeEncoder()
    for message, message_tables in zip(messages_, tables):
        for symbol, table in zip(message, message_tables):
            model = constriction.stream.model.Categorical(table / table.sum(), perfect=False)
            encoder.encode(np.array([symbol], dtype=np.int32), model)
    return encoder.num_bits()


def test_code_lengths_agree_with_constriction_on_the_same_quantised_model():
    """Windows of about 16 bits: each of ours is within 2 bits of its ideal length and never longer
    than constriction's (whole 32-bit words); all together they cost what constriction's single
    stream costs, give or take the per-window termination. (A shortest code can beat its ideal
    length: the decoder knows the window's length, so any point of the interval will do.)"""
    rng = np.random.default_rng(0)
    precision = 16
    windows, window_tables, ours = [], [], []
    for _ in range(200):
        tables, message = [], []
        while not tables or ideal_bits(message, np.stack(tables), precision) < 14:
            tables.append(random_table(rng, 256, precision, skew=2.5))
            message += draw_message(rng, tables[-1:])
        tables = np.stack(tables)
        code = arith.encode(message, tables, precision)
        assert code.bits <= ideal_bits(message, tables, precision) + 2
        assert code.bits <= constriction_bits([message], [tables])
        windows.append(message)
        window_tables.append(tables)
        ours.append(code.bits)
    stream = constriction_bits(windows, window_tables)
    ideal = sum(ideal_bits(m, t, precision) for m, t in zip(windows, window_tables))
    assert abs(stream - ideal) <= 64 + 0.001 * ideal  # constriction re-quantises to 24 bits; whole words
    assert ideal - 2 * len(windows) <= sum(ours) <= stream + 2 * len(windows)
