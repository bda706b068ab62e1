"""Schedule: which mode and compression rate p the mixer uses at each training step.

Design choices:
- A schedule is a list of phases, one mode and order per phase, each with a linear ramp of p
  from `rate_start` to `rate_end`. Warm-up, steady and decay are phases; so is the paper's
  default (DESIGN.md section 4): 20% of steps `translation` (random order) with p rising
  0.4 -> 0.9, then `sentinel` at 0.9.
- A phase lasts `steps` or a `fraction` of the run's total steps; the last phase may give
  neither and lasts until the end. Steps count from 0; within a phase of length L starting at
  step a, p(a + i) = start + (end - start) * i / L, so a ramp reaches its end value on the first
  step of the next phase. Steps past the last phase keep its final mode and rate.
- Presets are small functions returning a `ScheduleConfig`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from proxylm.config import ConfigError
from proxylm.data.mixer import MixPoint, Mode, Order


@dataclass
class PhaseConfig:
    mode: Mode = Mode.SENTINEL
    """Layout of the views in this phase."""
    rate_start: float = 0.9
    """p (share of compressed views) on the phase's first step."""
    rate_end: float | None = None
    """p reached at the phase's end (linear ramp); None keeps `rate_start`."""
    order: Order = Order.RANDOM
    """Which view comes first in a pair (translation and parallel modes only)."""
    steps: int | None = None
    """Length in steps; give this or `fraction` (or neither, for the last phase only)."""
    fraction: float | None = None
    """Length as a fraction of the run's total steps."""

    def __post_init__(self) -> None:
        for name in ("rate_start", "rate_end"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"phase {name} must be in [0, 1], got {value!r}")
        if self.steps is not None and self.fraction is not None:
            raise ConfigError("a phase takes `steps` or `fraction`, not both")
        if self.steps is not None and self.steps <= 0:
            raise ConfigError(f"phase steps must be > 0, got {self.steps}")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"phase fraction must be in (0, 1], got {self.fraction}")

    @property
    def final_rate(self) -> float:
        return self.rate_start if self.rate_end is None else self.rate_end

    @property
    def open_ended(self) -> bool:
        return self.steps is None and self.fraction is None


@dataclass
class ScheduleConfig:
    phases: list[PhaseConfig] = field(default_factory=lambda: [PhaseConfig()])
    """Phases in order; all but the last need `steps` or `fraction`."""

    def __post_init__(self) -> None:
        if not self.phases:
            raise ConfigError("schedule.phases must list at least one phase")
        for i, phase in enumerate(self.phases[:-1]):
            if phase.open_ended:
                raise ConfigError(
                    f"schedule.phases[{i}] needs `steps` or `fraction` (only the last phase may be open-ended)"
                )
        total_fraction = sum(p.fraction or 0.0 for p in self.phases)
        if total_fraction > 1.0 + 1e-9:
            raise ConfigError(f"schedule.phases fractions add up to {total_fraction:g} > 1")

    @property
    def uses_compression(self) -> bool:
        """False for a schedule that never shows a compressed view (the byte baseline)."""
        return any(p.rate_start > 0 or p.final_rate > 0 for p in self.phases)


@dataclass(frozen=True)
class _Span:
    start: int
    end: int | None  # None: open-ended
    phase: PhaseConfig


class Schedule:
    """A ScheduleConfig resolved against the run's total steps: `at(step) -> MixPoint`."""

    def __init__(self, cfg: ScheduleConfig, total_steps: int | None = None):
        if total_steps is not None and total_steps <= 0:
            raise ConfigError(f"total_steps must be > 0, got {total_steps}")
        self.cfg = cfg
        self.total_steps = total_steps
        self.spans = _resolve(cfg, total_steps)
        self._starts = [span.start for span in self.spans]

    def at(self, step: int) -> MixPoint:
        span = self.spans[max(0, bisect.bisect_right(self._starts, step) - 1)]
        phase = span.phase
        return MixPoint(mode=phase.mode, order=phase.order, rate=_rate(span, step))

    @property
    def phase_starts(self) -> list[int]:
        return list(self._starts)


def _resolve(cfg: ScheduleConfig, total_steps: int | None) -> list[_Span]:
    spans, start, fraction_done = [], 0, 0.0
    for i, phase in enumerate(cfg.phases):
        if phase.fraction is not None:
            if total_steps is None:
                raise ConfigError(f"schedule.phases[{i}].fraction needs the run's total steps")
            # round cumulative fractions, so fractions adding up to 1 cover exactly total_steps
            length = round((fraction_done + phase.fraction) * total_steps) - round(fraction_done * total_steps)
            fraction_done += phase.fraction
        elif phase.steps is not None:
            length = phase.steps
        else:
            length = None if total_steps is None else max(total_steps - start, 0)
            if length is None and phase.final_rate != phase.rate_start:
                raise ConfigError(
                    f"schedule.phases[{i}] ramps to the end of the run, which needs the run's total steps"
                )
        if length == 0:
            continue  # a fraction that rounds to no steps
        spans.append(_Span(start, None if length is None else start + length, phase))
        if length is not None:
            start += length
    if not spans:
        raise ConfigError(f"schedule has no steps at total_steps={total_steps}")
    return spans


def _rate(span: _Span, step: int) -> float:
    phase = span.phase
    if span.end is None or phase.rate_end is None:
        return phase.rate_start
    progress = min(max((step - span.start) / (span.end - span.start), 0.0), 1.0)
    return phase.rate_start + (phase.rate_end - phase.rate_start) * progress


# --- presets ------------------------------------------------------------------------------------


def proxy_default(
    total_steps: int | None = None, *, warmup_fraction: float = 0.2, rate_start: float = 0.4, rate: float = 0.9
) -> ScheduleConfig:
    """The paper's schedule: `translation` (random order) with p rising rate_start -> rate over the
    first `warmup_fraction` of steps, then `sentinel` at `rate`. With `total_steps` the warm-up is
    fixed in steps; without, it stays a fraction of whatever the run's length is."""
    if total_steps is None:
        length = {"fraction": warmup_fraction}
    else:
        length = {"steps": max(1, round(warmup_fraction * total_steps))}
    return ScheduleConfig(
        phases=[
            PhaseConfig(mode=Mode.TRANSLATION, order=Order.RANDOM, rate_start=rate_start, rate_end=rate, **length),
            PhaseConfig(mode=Mode.SENTINEL, rate_start=rate),
        ]
    )


def bytes_baseline() -> ScheduleConfig:
    """Raw bytes only, no sentinels: `<bos> bytes <eos>`."""
    return constant(Mode.VANILLA, 0.0)


def token_baseline() -> ScheduleConfig:
    """Compressed symbols only, no sentinels: `<bos> symbols <eos>`."""
    return constant(Mode.VANILLA, 1.0)


def constant(mode: Mode, rate: float, order: Order = Order.RANDOM) -> ScheduleConfig:
    return ScheduleConfig(phases=[PhaseConfig(mode=mode, order=order, rate_start=rate)])


def with_raw_cooldown(base: ScheduleConfig | None = None, *, cooldown_fraction: float = 0.3) -> ScheduleConfig:
    """`base` (default: proxy_default) for the first 1 - cooldown_fraction of steps, then p
    decaying linearly to 0 in the last phase's mode and order. Base phases must be given as
    fractions (or be the open-ended last one); a ramp cut by the cooldown stops where it is cut."""
    if not 0.0 < cooldown_fraction < 1.0:
        raise ConfigError(f"cooldown_fraction must be in (0, 1), got {cooldown_fraction}")
    base = base or proxy_default()
    keep = 1.0 - cooldown_fraction
    phases: list[PhaseConfig] = []
    used = 0.0
    for i, phase in enumerate(base.phases):
        if phase.steps is not None:
            raise ConfigError(f"with_raw_cooldown needs phases given as fractions; phases[{i}] has steps={phase.steps}")
        length = phase.fraction if phase.fraction is not None else keep - used
        length = min(length, keep - used)
        if length <= 1e-12:
            break
        cut_rate = phase.rate_start + (phase.final_rate - phase.rate_start) * (length / (phase.fraction or length))
        phases.append(
            PhaseConfig(
                mode=phase.mode, order=phase.order, rate_start=phase.rate_start, rate_end=cut_rate, fraction=length
            )
        )
        used += length
    last = phases[-1]
    phases.append(
        PhaseConfig(
            mode=last.mode, order=last.order, rate_start=last.final_rate, rate_end=0.0, fraction=cooldown_fraction
        )
    )
    return ScheduleConfig(phases=phases)
