"""Trials: one (size, arm, seed) each, with its training config, fingerprint and files.

    for trial in trials(cfg):
        train_cfg = trial_config(cfg, trial, ctx)

    trials/<size>/<arm>/seed-<s>/trial.json     what it trains (config, fingerprint, world size); before training
    trials/<size>/<arm>/seed-<s>/trained.json   the trainer's summary; once trained
    trials/<size>/<arm>/seed-<s>/result.json    the evaluated result; once evaluated
    trials/<size>/<arm>/seed-<s>/run/           the trainer's run folder (checkpoints, metrics)

Design choices:
- A trial's config is the shared base at its size (preset, lr), seed (weights and data order),
  budget and run folder, passed through its arm's builder; checkpoints land on the curve points.
- Compute-matched stops: a FLOPs budget is the trainer's own FLOPs stop (run.max_flops); a
  symbols budget becomes the same number of steps for every arm at that size.
- Two fingerprints. The training fingerprint covers everything training depends on (the config
  without paths, and the prepared shards' fingerprint), so a run folder trained on other shards
  or under another config is neither resumed nor scored. The config fingerprint covers the
  configs alone (training, data preparation, compressor spec): a kept result whose run folder is
  gone is checked against it, so a fresh checkout, which prepares its shards afresh (a new fit,
  a new shards fingerprint), still skips the trials kept under the same configs.
- A symbols budget depends on the number of processes, so the world size a trial was trained
  with is recorded and reused to check it from a one-process evaluation.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxylm import io
from proxylm.config import ConfigError, from_dict, to_dict
from proxylm.errors import UserError
from proxylm.study.arms import ARMS, ArmContext, planned_steps
from proxylm.study.config import Arm, Proxy, SizeConfig, StudyConfig
from proxylm.train.config import ModelSection, TrainConfig

TRIAL_FILE = "trial.json"
TRAINED_FILE = "trained.json"
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Trial:
    size: SizeConfig
    arm: Arm
    seed: int

    @property
    def key(self) -> str:
        return f"{self.size.label}/{self.arm.value}/seed-{self.seed}"

    def directory(self, out: str | Path) -> Path:
        return Path(out) / "trials" / self.size.label / self.arm.value / f"seed-{self.seed}"

    def kept_result(self, results_dir: str | Path) -> Path:
        """Where the study's results_dir keeps this trial's result.json."""
        return Path(results_dir) / self.size.label / self.arm.value / f"seed-{self.seed}.json"


def trials(cfg: StudyConfig) -> list[Trial]:
    """Every trial to run, by size, then seed, then arm (so a partial study compares whole seeds)."""
    chosen = []
    for size in cfg.sizes:
        if cfg.only_sizes is not None and size.label not in cfg.only_sizes:
            continue
        arms = [a for a in ARMS if a in cfg.arms and (size.arms is None or a in size.arms)]
        base_seeds = size.seeds or cfg.seeds
        seeds_of = {arm: set(base_seeds) | set(size.extra_seeds.get(arm.value, [])) for arm in arms}
        for seed in sorted(set().union(*seeds_of.values())):
            if cfg.only_seeds is not None and seed not in cfg.only_seeds:
                continue
            chosen.extend(Trial(size, arm, seed) for arm in arms if seed in seeds_of[arm])
    return chosen


def trial_base(cfg: StudyConfig, trial: Trial, ctx: ArmContext) -> TrainConfig:
    """The study's base config at this trial's size, seed, budget and run directory."""
    base = copy.deepcopy(cfg.train)
    size = trial.size
    base.model = from_dict(ModelSection, {**to_dict(base.model), "preset": size.preset, **size.model}, prefix="model.")
    if size.lr is not None:
        base.optim = dataclasses.replace(base.optim, lr=size.lr)
    base.run.seed = trial.seed
    base.mix = dataclasses.replace(base.mix, seed=trial.seed)
    base.run.out = str(trial.directory(cfg.out) / "run")
    base.run.max_time_s = None
    base.run.max_flops = size.flops
    base.run.max_steps = None
    if size.symbols is not None:
        per_step = base.pack.batch_size * base.pack.seq_len * base.run.grad_accum * ctx.world_size
        if size.symbols < per_step:
            raise ConfigError(f"sizes ({size.label}): symbols={size.symbols} is less than one step ({per_step} positions)")
        base.run.max_steps = size.symbols // per_step
    base.ckpt = dataclasses.replace(base.ckpt, dir=None, resume=True)
    return base


def trial_config(cfg: StudyConfig, trial: Trial, ctx: ArmContext) -> TrainConfig:
    """The arm's training config, checkpointing at the curve points."""
    train_cfg = ARMS[trial.arm].build(trial_base(cfg, trial, ctx), ctx)
    total = planned_steps(train_cfg, ctx.world_size)
    points = min(cfg.eval.curve_points, total)
    train_cfg.ckpt.every = math.ceil(total / points)
    train_cfg.ckpt.keep = points + 1
    return train_cfg


def fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def field_defaults(cls: type) -> dict[str, Any]:
    """A dataclass's declared field defaults as plain data (nothing constructed, no checks run)."""
    found = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            found[f.name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            found[f.name] = to_dict(f.default_factory())
    return found


def without_defaults(cfg: Any) -> dict[str, Any]:
    """`cfg` as plain data, each section without the fields left at their declared defaults, so a
    field added later with a default that keeps the old behaviour does not change fingerprints."""
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return {name: non_default(value) if dataclasses.is_dataclass(value) else to_dict(value) for name, value in sections.items()}


def non_default(section: Any) -> dict[str, Any]:
    """A config section as plain data without the fields left at their declared defaults."""
    defaults = field_defaults(type(section))
    return {k: v for k, v in to_dict(section).items() if k not in defaults or defaults[k] != v}


def training_data(train_cfg: TrainConfig) -> dict[str, Any]:
    """The training config as fingerprinted: without paths and without fields at their defaults."""
    data = without_defaults(train_cfg)
    data["run"].pop("out", None)
    data.pop("ckpt")
    data["data"].pop("shards", None)
    return data


def train_fingerprint(train_cfg: TrainConfig) -> str:
    """What training depends on: the config without paths (and without fields at their defaults),
    plus the prepared data's fingerprint."""
    from proxylm.data.shards import read_manifest

    data = training_data(train_cfg)
    data["prepared"] = read_manifest(Path(train_cfg.data.shards))["fingerprint"]
    return fingerprint(data)


def read_json(path: Path) -> dict[str, Any] | None:
    return io.read_json(path, hint="; delete it to redo that step")


@dataclass
class TrialState:
    """What a trial's directory holds so far."""

    recorded: dict[str, Any] | None  # trial.json
    trained: dict[str, Any] | None  # trained.json (or the training summary inside result.json)
    result: dict[str, Any] | None  # result.json

    @classmethod
    def read(cls, directory: Path, kept_result: Path | None = None) -> "TrialState":
        """What `directory` holds; its result, if the directory has none, from `kept_result` (the
        copy a results_dir keeps when the run folder is gone, e.g. in a fresh checkout)."""
        result = read_json(directory / RESULT_FILE)
        if result is None and kept_result is not None:
            result = read_json(kept_result)
        trained = read_json(directory / TRAINED_FILE) or (result or {}).get("train")
        return cls(read_json(directory / TRIAL_FILE), trained, result)


def trial_state(cfg: StudyConfig, trial: Trial) -> TrialState:
    kept = trial.kept_result(cfg.results_dir) if cfg.results_dir else None
    return TrialState.read(trial.directory(cfg.out), kept)


def config_fingerprint(cfg: StudyConfig, trial: Trial, train_cfg: TrainConfig) -> str:
    """What training depends on, as the configs define it: the training config without paths
    (and fields at their defaults) plus how its data is prepared (the study's data section and the
    arm's compressor spec, the neural proxy's byte LM), not the prepared shards' own fingerprint,
    which changes with every fit (a fresh checkout prepares afresh)."""
    data = training_data(train_cfg)
    proxy = ARMS[trial.arm].proxy
    data["preparation"] = {"data": non_default(cfg.data), "compressor": cfg.compressors.spec(proxy)}
    if proxy is Proxy.NEURAL:
        data["preparation"]["neural_lm"] = non_default(cfg.neural_lm)
    return fingerprint(data)


def kept_result_key(result: dict[str, Any]) -> str:
    """The fingerprint a kept result (its run folder gone) is checked by: the configs'; for one kept
    before results carried it, the training fingerprint (configs and prepared shards)."""
    return "config_fingerprint" if "config_fingerprint" in result else "train_fingerprint"


def checked_config(cfg: StudyConfig, ctx: ArmContext, trial: Trial, state: TrialState) -> tuple[TrainConfig, dict[str, str]]:
    """The trial's training config and fingerprints (train_fingerprint: configs and prepared
    shards, which a run folder must match to be resumed or scored; config_fingerprint: configs
    only, which a kept result must match); refuses a trial trained under another config."""
    world = (state.recorded or {}).get("world_size", ctx.world_size)
    train_cfg = trial_config(cfg, trial, dataclasses.replace(ctx, world_size=world))
    fp = train_fingerprint(train_cfg)
    fingerprints = {"train_fingerprint": fp, "config_fingerprint": config_fingerprint(cfg, trial, train_cfg)}
    if state.recorded is not None and state.recorded.get("train_fingerprint") != fp:
        raise UserError(
            f"{trial.directory(cfg.out)}: trained under another config (fingerprint {state.recorded.get('train_fingerprint')}, "
            f"now {fp}); delete the directory to retrain it, or give the study another `out`"
        )
    key = kept_result_key(state.result or {})
    if state.recorded is None and state.result is not None and state.result.get(key) != fingerprints[key]:
        raise UserError(
            f"{trial.kept_result(cfg.results_dir or '.')}: a kept result trained under another config (fingerprint "
            f"{state.result.get(key)}, now {fingerprints[key]}); delete it to retrain the trial, or give the study another results_dir"
        )
    return train_cfg, fingerprints
