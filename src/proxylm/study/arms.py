"""Arms: each a function that derives an arm's TrainConfig from the shared base, in one registry.

    cfg = ARMS[Arm.PROXY_BPE].build(base, ArmContext(shards={...}, specs=CompressorSpecs()))

Design choices:
- `ARMS` maps every Arm to its builder, the shards it trains on and whether the translation probe
  applies: an explicit dict, no if/elif ladder. A builder changes only the data (which shards),
  the schedule and the raw-only switch; shape, optimiser, lr, warm-up, packing and heads stay the
  base's, so no arm is tuned more than another.
- Schedules come from proxylm.data.schedule's presets: the paper's default (20% translation
  warm-up with p 0.4 -> 0.9, then sentinel at 0.9), the baselines, p = 0.5, the raw cool-down,
  and the pairing controls built from the default by changing only the phases' mode.
- Raw only: the proxy-bpe config with `mix.drop_compressed` and its schedule pinned to the proxy
  run's steps, so the two runs draw the same views for the same documents and the raw-only
  stream is the proxy stream's raw views, in order. It trains until it has covered every raw
  byte the proxy run trains on (at most one batch more): both loaders are replayed on rank 0
  without a model (remembered in the study's cache). Its steps, and so its FLOPs, are what that takes.
  Its learning rate follows the proxy run's schedule by raw bytes trained (optim.follow_map): each
  document is trained at the lr the proxy run gave it, not under a cosine of its own.
- Bytes at raw-only's budget: the byte baseline stopped at the FLOPs raw-only trains with, so
  transfer is read against both (proxy-bpe at the full budget, bytes at raw-only's).
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxylm.data.mixer import Mode
from proxylm.data.schedule import (
    Schedule,
    ScheduleConfig,
    bytes_baseline,
    proxy_default,
    token_baseline,
    with_raw_cooldown,
)
from proxylm.config import to_dict
from proxylm.io import atomic_write_json
from proxylm.study.config import Arm, CompressorSpecs, Proxy
from proxylm.train.config import TrainConfig


@dataclass(frozen=True)
class ArmContext:
    """What arm builders need besides the base config."""

    shards: dict[Proxy, Path]  # prepared directory of each proxy
    specs: CompressorSpecs
    world_size: int = 1
    cache_dir: Path | None = None  # where slow derivations (the raw-only replay) are remembered

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        """compute(), remembered under `key` (plain data) in cache_dir."""
        if self.cache_dir is None:
            return compute()
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = self.cache_dir / f"{digest}.json"
        if path.is_file():
            return json.loads(path.read_text())["value"]
        value = compute()
        atomic_write_json(path, {"key": key, "value": value})
        return value


def derive(base: TrainConfig, ctx: ArmContext, proxy: Proxy, schedule: ScheduleConfig) -> TrainConfig:
    """`base` trained on `proxy`'s shards under `schedule`; nothing else changes."""
    cfg = copy.deepcopy(base)
    cfg.data = dataclasses.replace(cfg.data, shards=str(ctx.shards[proxy]), corpus=None, compressor=ctx.specs.spec(proxy))
    cfg.schedule = schedule
    return cfg


def with_phase_modes(schedule: ScheduleConfig, mode: Mode) -> ScheduleConfig:
    """The same phases (lengths and rates), every one in `mode`."""
    return ScheduleConfig(phases=[dataclasses.replace(p, mode=mode) for p in schedule.phases])


def pin_schedule(schedule: ScheduleConfig, total_steps: int) -> ScheduleConfig:
    """The schedule as resolved for a run of `total_steps`, with every phase's length in steps,
    so a run of another length (raw-only) follows the same step-by-step schedule."""
    resolved = Schedule(schedule, total_steps)
    phases = []
    for span in resolved.spans:
        steps = None if span.end is None else span.end - span.start
        phases.append(dataclasses.replace(span.phase, steps=steps, fraction=None))
    return ScheduleConfig(phases=phases)


def bytes_arm(base: TrainConfig, ctx: ArmContext) -> TrainConfig:
    return derive(base, ctx, Proxy.BPE, bytes_baseline())


def token_bpe_arm(base: TrainConfig, ctx: ArmContext) -> TrainConfig:
    return derive(base, ctx, Proxy.BPE, token_baseline())


def proxy_arm(proxy: Proxy) -> Callable[[TrainConfig, ArmContext], TrainConfig]:
    def build(base: TrainConfig, ctx: ArmContext) -> TrainConfig:
        return derive(base, ctx, proxy, proxy_default())

    build.__name__ = f"proxy_{proxy.name.lower()}_arm"
    return build


def rate_05_arm(base: TrainConfig, ctx: ArmContext) -> TrainConfig:
    return derive(base, ctx, Proxy.BPE, proxy_default(rate=0.5))


def cooldown_arm(base: TrainConfig, ctx: ArmContext) -> TrainConfig:
    return derive(base, ctx, Proxy.BPE, with_raw_cooldown(proxy_default(), cooldown_fraction=0.3))


def no_pairing_arm(base: TrainConfig, ctx: ArmContext) -> TrainConfig:
    return derive(base, ctx, Proxy.BPE, with_phase_modes(proxy_default(), Mode.SENTINEL))


def pairing_always_arm(base: TrainConfig, ctx: ArmContext) -> TrainConfig:
    return derive(base, ctx, Proxy.BPE, with_phase_modes(proxy_default(), Mode.TRANSLATION))


def raw_only_arm(base: TrainConfig, ctx: ArmContext) -> TrainConfig:
    from proxylm.data.shards import read_manifest

    proxy = proxy_arm(Proxy.BPE)(base, ctx)
    proxy_steps = planned_steps(proxy, ctx.world_size)
    cfg = copy.deepcopy(proxy)
    cfg.schedule = pin_schedule(proxy.schedule, proxy_steps)
    cfg.mix = dataclasses.replace(cfg.mix, drop_compressed=True)
    cfg.run.max_flops = None
    prepared = read_manifest(Path(proxy.data.shards))["fingerprint"]
    plan = ctx.cached(("raw-only plan", to_dict(proxy), prepared, proxy_steps, ctx.world_size),
                      lambda: raw_only_plan(proxy, cfg, proxy_steps, ctx.world_size))
    cfg.run.max_steps = plan["steps"]
    cfg.optim = dataclasses.replace(cfg.optim, follow_steps=proxy_steps, follow_map=plan["follow_map"])
    return cfg


def bytes_at_raw_only_budget_arm(base: TrainConfig, ctx: ArmContext) -> TrainConfig:
    """The byte baseline stopped at the FLOPs the raw-only control trains with (its own cosine)."""
    raw_only = raw_only_arm(base, ctx)
    cfg = bytes_arm(base, ctx)
    cfg.run.max_flops = planned_flops(raw_only, ctx.world_size)
    cfg.run.max_steps = None
    return cfg


@dataclass(frozen=True)
class ArmSpec:
    build: Callable[[TrainConfig, ArmContext], TrainConfig]
    proxy: Proxy  # the shards it trains on
    translation_probe: bool  # its model reads compressed views beside raw ones (or is their control)
    about: str  # one line for the report


ARMS: dict[Arm, ArmSpec] = {
    Arm.BYTES: ArmSpec(bytes_arm, Proxy.BPE, False, "raw bytes only, no sentinels"),
    Arm.TOKEN_BPE: ArmSpec(token_bpe_arm, Proxy.BPE, False, "BPE tokens only, no sentinels; BPB over raw bytes"),
    Arm.PROXY_BPE: ArmSpec(proxy_arm(Proxy.BPE), Proxy.BPE, True, "paper schedule: 20% translation warm-up p 0.4->0.9, then sentinel p 0.9"),
    Arm.RAW_ONLY: ArmSpec(raw_only_arm, Proxy.BPE, True, "proxy-bpe's raw views only (compressed views dropped), same documents"),
    Arm.BYTES_RAW_ONLY_BUDGET: ArmSpec(bytes_at_raw_only_budget_arm, Proxy.BPE, False, "raw bytes only, stopped at raw-only's FLOPs"),
    Arm.PROXY_BPE_BYTES: ArmSpec(proxy_arm(Proxy.BPE_BYTES), Proxy.BPE_BYTES, True, "BPE ids as fixed-width bytes (id order), paper schedule"),
    Arm.PROXY_BPE_BYTES_GRAY: ArmSpec(proxy_arm(Proxy.BPE_BYTES_GRAY), Proxy.BPE_BYTES_GRAY, True, "BPE ids as fixed-width bytes (Gray order), paper schedule"),
    Arm.PROXY_NEURAL: ArmSpec(proxy_arm(Proxy.NEURAL), Proxy.NEURAL, True, "neural arithmetic-coding proxy, paper schedule"),
    Arm.PROXY_GZIP: ArmSpec(proxy_arm(Proxy.GZIP), Proxy.GZIP, True, "gzip proxy, paper schedule"),
    Arm.PROXY_BPE_P05: ArmSpec(rate_05_arm, Proxy.BPE, True, "warm-up p 0.4->0.5, then sentinel p 0.5"),
    Arm.PROXY_BPE_COOLDOWN: ArmSpec(cooldown_arm, Proxy.BPE, True, "paper schedule, p decays linearly to 0 over the last 30%"),
    Arm.NO_PAIRING: ArmSpec(no_pairing_arm, Proxy.BPE, True, "paper rates, sentinel mode throughout (never paired)"),
    Arm.PAIRING_ALWAYS: ArmSpec(pairing_always_arm, Proxy.BPE, True, "paper rates, translation mode throughout (always paired)"),
}


# ---- planning ------------------------------------------------------------------------------------


def alphabet_size(shards: str | Path) -> int:
    from proxylm.data.shards import read_manifest

    return int(read_manifest(Path(shards))["compressor"]["alphabet_size"])


def run_plan(cfg: TrainConfig, world_size: int = 1) -> Any:
    """The trainer's own plan_run for `cfg` (steps, FLOPs per step)."""
    import torch

    from proxylm.train.distributed import DistInfo
    from proxylm.train.trainer import plan_run

    info = DistInfo(rank=0, local_rank=0, world_size=world_size, device=torch.device("cpu"), backend=None)
    return plan_run(cfg, cfg.model_config(alphabet_size(cfg.data.shards)), info)


def planned_steps(cfg: TrainConfig, world_size: int = 1) -> int:
    """Optimiser steps the trainer will plan for `cfg`."""
    return int(run_plan(cfg, world_size).total_steps)


def planned_flops(cfg: TrainConfig, world_size: int = 1) -> float:
    """Training FLOPs of a run of `cfg` as the trainer plans and counts them (steps x FLOPs per step)."""
    plan = run_plan(cfg, world_size)
    return float(plan.total_steps * plan.flops_per_step)


def replay_loader(cfg: TrainConfig, total_steps: int, world_size: int):
    """Rank 0's loader of a run of `cfg`, for replaying its batches without a model."""
    from proxylm.data.loader import Loader
    from proxylm.data.shards import Shards

    shards = Shards.open(cfg.data.shards, cfg.data.split)
    model_cfg = cfg.model_config(shards.alphabet_size)
    return Loader(
        shards, Schedule(cfg.schedule, total_steps), cfg.mix, cfg.pack,
        n_main_heads=model_cfg.n_main_heads, n_raw_heads=model_cfg.n_raw_heads, rank=0, world_size=world_size,
        grad_accum=cfg.run.grad_accum,
    )


def raw_bytes_per_step(loader: Any, step: int, grad_accum: int) -> int:
    return sum(loader.next_batch(step).raw_bytes for _ in range(grad_accum))


def raw_only_plan(proxy: TrainConfig, raw_only: TrainConfig, proxy_steps: int, world_size: int = 1) -> dict[str, Any]:
    """The raw-only run's steps and lr map, from both loaders replayed on rank 0 without a model.

    steps: what it takes to train on every raw byte the proxy run trains on in `proxy_steps`
    steps (at most one batch more). follow_map: knots [[step, proxy_step], ...] mapping each of
    its steps to the proxy step that had trained on as many raw bytes, so every document gets the
    learning rate the proxy run gave it (optim.follow_map)."""
    loader = replay_loader(proxy, proxy_steps, world_size)
    proxy_seen = list(itertools.accumulate(raw_bytes_per_step(loader, t, proxy.run.grad_accum) for t in range(proxy_steps)))
    target = proxy_seen[-1]
    loader = replay_loader(raw_only, proxy_steps, world_size)
    starts = []  # raw bytes trained before each raw-only step
    seen = 0
    while seen < target or not starts:
        starts.append(seen)
        seen += raw_bytes_per_step(loader, len(starts) - 1, raw_only.run.grad_accum)
    mapped = [min(bisect.bisect_right(proxy_seen, before), proxy_steps - 1) for before in starts]
    every = max(1, len(starts) // 64)
    knots = [[s, mapped[s]] for s in range(0, len(starts), every)]
    if knots[-1][0] != len(starts) - 1:
        knots.append([len(starts) - 1, mapped[-1]])
    return {"steps": len(starts), "follow_map": knots}
