import numpy as np
import pytest

from proxylm import vocab
from proxylm.config import ConfigError, load_config
from proxylm.data.mixer import (
    STREAM_PAIR_ORDER,
    STREAM_VIEW,
    Kind,
    MixConfig,
    Mixer,
    MixPoint,
    Mode,
    Order,
    build_units,
    compressed_probability,
    plan_views,
    uniforms,
)

RAW = np.frombuffer(b"hi", dtype=np.uint8)
SYMBOLS = np.array([7], dtype=np.uint16)
B = list(vocab.bytes_to_ids(RAW))  # [h, i] as ids
S = list(vocab.symbols_to_ids(SYMBOLS))
BOS, EOS = vocab.BOS, vocab.EOS
RO, RC, CO, CC = vocab.RAW_OPEN, vocab.RAW_CLOSE, vocab.COMPRESSED_OPEN, vocab.COMPRESSED_CLOSE

# u_view = 0.0 always hits the compressed-leaning draw, 0.999 never; u_order < 0.5 puts raw first
COMPRESSED, NOT_COMPRESSED = 0.0, 0.999
RAW_FIRST, COMPRESSED_FIRST = 0.1, 0.9


def layout(mode, rate, u_view, u_order=RAW_FIRST, order=Order.RANDOM, drop=False):
    plan = plan_views(MixPoint(mode, order, rate), u_view, u_order, drop)
    return [list(u.ids) for u in build_units(plan, RAW, SYMBOLS)]


@pytest.mark.parametrize(
    "mode, rate, u_view, u_order, expected",
    [
        (Mode.VANILLA, 0.0, NOT_COMPRESSED, RAW_FIRST, [[BOS, *B, EOS]]),
        (Mode.VANILLA, 1.0, COMPRESSED, RAW_FIRST, [[BOS, *S, EOS]]),
        (Mode.SENTINEL, 0.5, NOT_COMPRESSED, RAW_FIRST, [[BOS, RO, *B, RC, EOS]]),
        (Mode.SENTINEL, 0.5, COMPRESSED, RAW_FIRST, [[BOS, CO, *S, CC, EOS]]),
        (Mode.TRANSLATION, 0.5, COMPRESSED, RAW_FIRST, [[BOS, RO, *B, RC, CO, *S, CC, EOS]]),
        (Mode.TRANSLATION, 0.5, COMPRESSED, COMPRESSED_FIRST, [[BOS, CO, *S, CC, RO, *B, RC, EOS]]),
        (Mode.PARALLEL, 0.5, COMPRESSED, RAW_FIRST, [[BOS, RO, *B, RC, EOS], [BOS, CO, *S, CC, EOS]]),
        (Mode.PARALLEL, 0.5, COMPRESSED, COMPRESSED_FIRST, [[BOS, CO, *S, CC, EOS], [BOS, RO, *B, RC, EOS]]),
        # unpaired draws of the paired modes use the sentinel layout
        (Mode.TRANSLATION, 0.3, NOT_COMPRESSED, RAW_FIRST, [[BOS, RO, *B, RC, EOS]]),
        (Mode.PARALLEL, 0.9, COMPRESSED, RAW_FIRST, [[BOS, CO, *S, CC, EOS]]),
    ],
)
def test_exact_layout_of_each_mode(mode, rate, u_view, u_order, expected):
    assert layout(mode, rate, u_view, u_order) == expected


def test_fixed_orders_ignore_the_order_draw():
    assert layout(Mode.TRANSLATION, 0.5, COMPRESSED, COMPRESSED_FIRST, order=Order.RAW_FIRST)[0][1] == RO
    assert layout(Mode.TRANSLATION, 0.5, COMPRESSED, RAW_FIRST, order=Order.COMPRESSED_FIRST)[0][1] == CO


def test_units_carry_view_kinds_and_ordinals():
    (unit,) = build_units(plan_views(MixPoint(Mode.TRANSLATION, Order.RAW_FIRST, 0.5), 0.0, 0.0), RAW, SYMBOLS)
    n_raw = len(B) + 2
    assert list(unit.kind) == [Kind.NONE] + [Kind.RAW] * n_raw + [Kind.COMPRESSED] * (len(S) + 2) + [Kind.NONE]
    # bos joins the first view and eos the last
    assert list(unit.view) == [0] * (1 + n_raw) + [1] * (len(S) + 2 + 1)


@pytest.mark.parametrize(
    "mode, rate, y",
    [(Mode.SENTINEL, 0.9, 0.9), (Mode.TRANSLATION, 0.9, 2 - 1 / 0.9), (Mode.PARALLEL, 0.75, 2 - 1 / 0.75),
     (Mode.TRANSLATION, 0.25, 0.25 / 0.75), (Mode.TRANSLATION, 0.5, 1.0),
     (Mode.PARALLEL, 0.0, 0.0), (Mode.PARALLEL, 1.0, 1.0)],
)
def test_recalibrated_probability(mode, rate, y):
    assert compressed_probability(mode, rate) == pytest.approx(y)


@pytest.mark.parametrize("mode", [Mode.SENTINEL, Mode.TRANSLATION, Mode.PARALLEL])
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.7, 0.9])
def test_share_of_compressed_views_equals_rate(mode, rate):
    n = 20_000
    positions = np.arange(n)
    u_view, u_order = uniforms(3, 0, STREAM_VIEW, positions), uniforms(3, 0, STREAM_PAIR_ORDER, positions)
    point = MixPoint(mode, Order.RANDOM, rate)
    plans = [plan_views(point, a, b) for a, b in zip(u_view, u_order)]
    compressed = sum(p.count(Kind.COMPRESSED) for p in plans)
    raw = sum(p.count(Kind.RAW) for p in plans)
    share = compressed / (compressed + raw)
    # the share of n Bernoulli draws: 5 standard deviations of p(1-p)/n is <= 0.018
    assert abs(share - rate) < 5 * np.sqrt(rate * (1 - rate) / n) + 1e-9, share
    if mode.paired and 0 < rate < 1:
        assert any(p.count(Kind.RAW) and p.count(Kind.COMPRESSED) for p in plans), "paired modes must make pairs"


def test_random_order_is_a_fair_coin():
    u_order = uniforms(0, 0, STREAM_PAIR_ORDER, np.arange(4000))
    point = MixPoint(Mode.TRANSLATION, Order.RANDOM, 0.5)
    raw_first = np.mean([plan_views(point, 0.0, u).units[0][0] is Kind.RAW for u in u_order])
    assert abs(raw_first - 0.5) < 0.04


def test_parallel_pair_is_two_units_translation_pair_is_one():
    parallel = plan_views(MixPoint(Mode.PARALLEL, Order.RANDOM, 0.5), 0.0, 0.2)
    translation = plan_views(MixPoint(Mode.TRANSLATION, Order.RANDOM, 0.5), 0.0, 0.2)
    assert parallel.units == ((Kind.RAW,), (Kind.COMPRESSED,))
    assert translation.units == ((Kind.RAW, Kind.COMPRESSED),)


@pytest.mark.parametrize("mode", list(Mode))
def test_drop_compressed_keeps_exactly_the_raw_views(mode):
    point = MixPoint(mode, Order.RANDOM, 0.7)
    u_view, u_order = uniforms(1, 0, STREAM_VIEW, np.arange(300)), uniforms(1, 0, STREAM_PAIR_ORDER, np.arange(300))
    for a, b in zip(u_view, u_order):
        full, dropped = plan_views(point, a, b), plan_views(point, a, b, drop_compressed=True)
        assert dropped.count(Kind.COMPRESSED) == 0
        assert dropped.count(Kind.RAW) == full.count(Kind.RAW)
        assert dropped.sentinels == full.sentinels


def test_drop_compressed_lays_out_a_pairs_raw_view_alone():
    assert layout(Mode.TRANSLATION, 0.5, COMPRESSED, drop=True) == [[BOS, RO, *B, RC, EOS]]
    assert layout(Mode.SENTINEL, 0.5, COMPRESSED, drop=True) == []


def test_mixer_applies_its_config():
    mixer = Mixer(MixConfig(seed=0, drop_compressed=True))
    units = mixer.mix(RAW, SYMBOLS, MixPoint(Mode.PARALLEL, Order.RAW_FIRST, 0.5), 0.0, 0.0)
    assert [list(u.ids) for u in units] == [[BOS, RO, *B, RC, EOS]]


def test_uniforms_are_seeded_and_independent_per_stream():
    positions = np.arange(10_000)
    a = uniforms(5, 2, STREAM_VIEW, positions)
    assert np.array_equal(a, uniforms(5, 2, STREAM_VIEW, positions))
    assert np.array_equal(a[100:200], uniforms(5, 2, STREAM_VIEW, positions[100:200]))  # random access
    assert ((a >= 0) & (a < 1)).all()
    assert abs(a.mean() - 0.5) < 0.01
    for other in (uniforms(6, 2, STREAM_VIEW, positions), uniforms(5, 3, STREAM_VIEW, positions),
                  uniforms(5, 2, STREAM_PAIR_ORDER, positions)):
        assert abs(np.corrcoef(a, other)[0, 1]) < 0.05


def test_mix_config_validation_and_yaml(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text("seed: 4\n")
    assert load_config(MixConfig, path, ["drop_compressed=true"]) == MixConfig(seed=4, drop_compressed=True)
    with pytest.raises(ConfigError, match="mix.seed"):
        MixConfig(seed="x")
    with pytest.raises(ConfigError, match="unknown key 'sede'"):
        load_config(MixConfig, None, ["sede=1"])
