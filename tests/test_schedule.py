import pytest

from proxylm.config import ConfigError, load_config
from proxylm.data.mixer import MixPoint, Mode, Order
from proxylm.data.schedule import (
    PhaseConfig,
    Schedule,
    ScheduleConfig,
    bytes_baseline,
    constant,
    proxy_default,
    token_baseline,
    with_raw_cooldown,
)


def point(schedule, step):
    p = schedule.at(step)
    return p.mode, p.order, round(p.rate, 6)


def test_proxy_default_at_its_boundaries():
    s = Schedule(proxy_default(), total_steps=100)
    assert s.phase_starts == [0, 20]
    assert point(s, 0) == (Mode.TRANSLATION, Order.RANDOM, 0.4)
    assert point(s, 10) == (Mode.TRANSLATION, Order.RANDOM, 0.65)
    assert point(s, 19) == (Mode.TRANSLATION, Order.RANDOM, round(0.4 + 0.5 * 19 / 20, 6))
    assert point(s, 20) == (Mode.SENTINEL, Order.RANDOM, 0.9)
    assert point(s, 99) == (Mode.SENTINEL, Order.RANDOM, 0.9)
    assert point(s, 500) == (Mode.SENTINEL, Order.RANDOM, 0.9)  # past the end: the last point holds


def test_proxy_default_in_steps_ignores_the_run_length():
    cfg = proxy_default(total_steps=1000)
    assert cfg.phases[0].steps == 200
    assert Schedule(cfg, total_steps=2000).phase_starts == [0, 200]
    assert Schedule(cfg).at(200) == MixPoint(Mode.SENTINEL, Order.RANDOM, 0.9)  # no total needed


def test_warmup_steady_decay():
    cfg = ScheduleConfig(
        phases=[
            PhaseConfig(mode=Mode.PARALLEL, order=Order.RAW_FIRST, rate_start=0.0, rate_end=0.8, steps=10),
            PhaseConfig(mode=Mode.SENTINEL, rate_start=0.8, steps=30),
            PhaseConfig(mode=Mode.SENTINEL, rate_start=0.8, rate_end=0.2),
        ]
    )
    s = Schedule(cfg, total_steps=50)
    assert point(s, 0) == (Mode.PARALLEL, Order.RAW_FIRST, 0.0)
    assert point(s, 5) == (Mode.PARALLEL, Order.RAW_FIRST, 0.4)
    assert point(s, 10) == (Mode.SENTINEL, Order.RANDOM, 0.8)
    assert point(s, 39) == (Mode.SENTINEL, Order.RANDOM, 0.8)
    assert point(s, 40) == (Mode.SENTINEL, Order.RANDOM, 0.8)
    assert point(s, 45) == (Mode.SENTINEL, Order.RANDOM, 0.5)
    assert point(s, 50) == (Mode.SENTINEL, Order.RANDOM, 0.2)


def test_raw_cooldown_decays_to_zero_over_the_last_30_percent():
    s = Schedule(with_raw_cooldown(), total_steps=100)
    assert s.phase_starts == [0, 20, 70]
    assert point(s, 19)[0] is Mode.TRANSLATION
    assert point(s, 69) == (Mode.SENTINEL, Order.RANDOM, 0.9)
    assert point(s, 70) == (Mode.SENTINEL, Order.RANDOM, 0.9)
    assert point(s, 85) == (Mode.SENTINEL, Order.RANDOM, 0.45)
    assert point(s, 100) == (Mode.SENTINEL, Order.RANDOM, 0.0)


def test_raw_cooldown_cuts_a_ramp_where_it_stops():
    base = ScheduleConfig(phases=[PhaseConfig(mode=Mode.SENTINEL, rate_start=0.0, rate_end=1.0, fraction=1.0)])
    s = Schedule(with_raw_cooldown(base, cooldown_fraction=0.5), total_steps=10)
    assert [round(s.at(i).rate, 6) for i in (0, 4, 5, 10)] == [0.0, 0.4, 0.5, 0.0]


def test_fractions_cover_exactly_the_run():
    cfg = ScheduleConfig(phases=[PhaseConfig(fraction=1 / 3), PhaseConfig(fraction=1 / 3), PhaseConfig(fraction=1 / 3)])
    for total in (1, 7, 10, 11, 1000):
        s = Schedule(cfg, total_steps=total)
        assert s.spans[-1].end == total


def test_baselines_and_constant():
    assert point(Schedule(bytes_baseline()), 10**9) == (Mode.VANILLA, Order.RANDOM, 0.0)
    assert point(Schedule(token_baseline()), 0) == (Mode.VANILLA, Order.RANDOM, 1.0)
    assert point(Schedule(constant(Mode.PARALLEL, 0.7, Order.COMPRESSED_FIRST)), 3) == (
        Mode.PARALLEL, Order.COMPRESSED_FIRST, 0.7)
    assert not bytes_baseline().uses_compression and token_baseline().uses_compression


def test_loads_from_yaml(tmp_path):
    path = tmp_path / "schedule.yaml"
    path.write_text(
        "phases:\n"
        "  - {fraction: 0.1, mode: parallel, order: compressed-first, rate_start: 0.2, rate_end: 0.6}\n"
        "  - {mode: sentinel, rate_start: 0.6}\n"
    )
    cfg = load_config(ScheduleConfig, path)
    assert cfg.phases[0].mode is Mode.PARALLEL and cfg.phases[0].order is Order.COMPRESSED_FIRST
    s = Schedule(cfg, total_steps=50)
    assert point(s, 2) == (Mode.PARALLEL, Order.COMPRESSED_FIRST, 0.36)
    assert point(s, 5) == (Mode.SENTINEL, Order.RANDOM, 0.6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PhaseConfig(rate_start=1.5), "rate_start must be in"),
        (lambda: PhaseConfig(rate_end=-0.1), "rate_end must be in"),
        (lambda: PhaseConfig(steps=5, fraction=0.5), "not both"),
        (lambda: PhaseConfig(steps=0), "steps must be > 0"),
        (lambda: ScheduleConfig(phases=[]), "at least one phase"),
        (lambda: ScheduleConfig(phases=[PhaseConfig(), PhaseConfig()]), r"phases\[0\] needs `steps` or `fraction`"),
        (lambda: ScheduleConfig(phases=[PhaseConfig(fraction=0.7), PhaseConfig(fraction=0.7)]), "add up to 1.4"),
        (lambda: Schedule(proxy_default()), r"phases\[0\].fraction needs the run's total steps"),
        (lambda: Schedule(constant(Mode.SENTINEL, 0.5), total_steps=0), "total_steps must be > 0"),
        (lambda: with_raw_cooldown(proxy_default(total_steps=100)), "needs phases given as fractions"),
    ],
)
def test_invalid_schedules_say_what_is_wrong(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_bad_mode_in_yaml_names_the_key():
    with pytest.raises(ConfigError, match=r"phases\[0\].mode' must be one of"):
        load_config(ScheduleConfig, None, ["phases=[{mode: zip}]"])
