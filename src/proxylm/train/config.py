"""The training config: one typed tree, loaded from YAML with dotted overrides.

    cfg = load_train_config("configs/tiny-proxy-bpe.yaml", ["model.dim=256", "run.max_steps=200"])

Design choices:
- Sections: data (shards, optionally prepared on first use), schedule / mix / pack (owned by the
  data stages), model (a preset name plus overrides of any ModelConfig field), optim, dist, ckpt
  and run. Choices are Enums; every section validates itself in `__post_init__`, so a bad value
  fails with its key path before any work starts.
- The model section mirrors ModelConfig: it is generated from ModelConfig's fields (all optional,
  None keeping the preset's value), so a new model field is overridable without touching this
  file. `vocab_size` is not among them: it follows from the shards' alphabet.
- Stops: any of max_steps, max_flops, max_time_s; the first reached ends the run. The cosine and
  the data schedule run over the planned steps (from max_steps and max_flops); a run bounded only
  by wall time plans with its measured speed.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxylm.config import ConfigError, load_config
from proxylm.data.mixer import MixConfig
from proxylm.data.packer import PackConfig
from proxylm.data.schedule import ScheduleConfig
from proxylm.model import PRESET_NAMES, ModelConfig, model_preset


class DType(enum.Enum):
    AUTO = "auto"  # bf16 where the device computes it natively, else fp32 (see `resolve_dtype`)
    FP32 = "fp32"  # everything in float32
    BF16 = "bf16"  # float32 weights, bf16 autocast (FSDP: bf16 params, fp32 gradient reduction)


def resolve_dtype(dtype: DType, device) -> DType:
    """`auto` -> bf16 on GPUs that support it and on CPUs with AVX-512 BF16 or AMX, else fp32: a
    CPU without them emulates bf16 matmuls about 100x slower than fp32 ones."""
    import torch

    if dtype is not DType.AUTO:
        return dtype
    if device.type == "cuda":
        return DType.BF16 if torch.cuda.is_bf16_supported() else DType.FP32
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return DType.BF16 if native else DType.FP32


class Strategy(enum.Enum):
    NONE = "none"  # one process
    DDP = "ddp"  # replicated weights, all-reduced gradients (torch DDP) when several processes run
    FSDP = "fsdp"  # weights, gradients and optimiser state sharded per block (FSDP2 fully_shard)


class Backend(enum.Enum):
    AUTO = "auto"  # nccl on GPUs, gloo on CPUs
    GLOO = "gloo"
    NCCL = "nccl"


class DeviceKind(enum.Enum):
    AUTO = "auto"  # the GPU when there is one, else the CPU
    CPU = "cpu"
    CUDA = "cuda"


@dataclass
class DataConfig:
    shards: str = ""
    """Directory of prepared shards (`proxylm prepare --out`)."""
    corpus: str | None = None
    """If set and `shards` holds no complete preparation yet, prepare it from this corpus (e.g. `stdlib`)."""
    compressor: str | None = None
    """Compressor spec the shards must have been prepared with (e.g. `bpe:vocab=4096`); checked against the manifest."""
    split: str = "train"
    """Split of the shards to train on."""
    workers: int = 1
    """Processes for a first-use prepare."""
    max_piece_bytes: int | None = None
    """Pieces the shards must hold (`prepare --max-piece-bytes`); None: prepare's default, not checked."""

    def prepare_options(self) -> dict:
        """What a first-use `prepare` of these shards takes beyond corpus, compressor and out."""
        return {"workers": self.workers} | ({} if self.max_piece_bytes is None else {"max_piece_bytes": self.max_piece_bytes})

    def __post_init__(self) -> None:
        if self.max_piece_bytes is not None and self.max_piece_bytes < 16:
            raise ConfigError(f"data.max_piece_bytes must be >= 16, got {self.max_piece_bytes}")
        if not self.shards:
            raise ConfigError("data.shards is required: the directory of prepared shards")
        if self.corpus is not None and self.compressor is None:
            raise ConfigError("data.corpus is set, so data.compressor must name the compressor to prepare with")
        if self.workers < 1:
            raise ConfigError(f"data.workers must be >= 1, got {self.workers}")


def _model_section_fields() -> list[tuple[str, Any, Any]]:
    hints = typing.get_type_hints(ModelConfig)
    mirrored = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size"]
    return [("preset", str, field(default="tiny"))] + [(name, hints[name] | None, field(default=None)) for name in mirrored]


def _check_model_section(self) -> None:
    if self.preset not in PRESET_NAMES:
        raise ConfigError(f"model.preset must be one of {', '.join(PRESET_NAMES)}, got {self.preset!r}")


def _model_overrides(self) -> dict[str, Any]:
    """The ModelConfig fields this section sets (those not None)."""
    values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "preset"}
    return {name: value for name, value in values.items() if value is not None}


ModelSection = dataclasses.make_dataclass(
    "ModelSection",
    _model_section_fields(),
    namespace={
        "__doc__": "A preset (see proxylm.model.model_preset) and overrides of ModelConfig fields; None keeps the preset's.",
        "__post_init__": _check_model_section,
        "overrides": _model_overrides,
    },
)


@dataclass
class OptimConfig:
    lr: float = 1.2e-3
    """Peak learning rate (reference: 1.2e-3 at 0.5B, 9e-4 at 1.5B, 7e-4 at 4B, 5e-4 at 7B and 14B)."""
    beta1: float = 0.9
    """AdamW first-moment decay."""
    beta2: float = 0.95
    """AdamW second-moment decay."""
    eps: float = 1e-15
    """AdamW epsilon (tiny, as in the reference)."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices; none on embeddings, norms and biases."""
    warmup_steps: int = 500
    """Linear warm-up steps (capped at the planned steps minus one)."""
    min_lr_ratio: float = 0.1
    """The cosine ends at this fraction of the peak."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables clipping)."""
    follow_steps: int | None = None
    """Run the warm-up and cosine of a run planned for this many steps instead of this run's own
    plan: a control that follows another run's schedule (the study's raw-only arm). None: own plan."""
    follow_map: list[list[int]] | None = None
    """With follow_steps: knots [[step, followed_step], ...] (both increasing, piecewise linear):
    the lr at this run's step s is the followed run's lr at the mapped step. None: the same step."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        for name in ("beta1", "beta2", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0 + (name == "min_lr_ratio"):
                raise ConfigError(f"optim.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("eps", "weight_decay", "grad_clip", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"optim.{name} must be >= 0, got {getattr(self, name)}")
        _check_follow(self.follow_steps, self.follow_map)


def _check_follow(steps: int | None, knots: list[list[int]] | None) -> None:
    if steps is not None and steps < 1:
        raise ConfigError(f"optim.follow_steps must be >= 1 or null, got {steps}")
    if knots is None:
        return
    if steps is None:
        raise ConfigError("optim.follow_map needs optim.follow_steps (the followed run's planned steps)")
    if not knots or any(not isinstance(k, list | tuple) or len(k) != 2 for k in knots):
        raise ConfigError(f"optim.follow_map must be a non-empty list of [step, followed_step] pairs, got {knots!r}")
    for (s0, f0), (s1, f1) in zip(knots, knots[1:]):
        if s1 <= s0 or f1 < f0:
            raise ConfigError(f"optim.follow_map: steps must increase and followed steps must not decrease, got {[s0, f0]} then {[s1, f1]}")


@dataclass
class DistConfig:
    strategy: Strategy = Strategy.DDP
    """Data parallelism when torchrun starts several processes: ddp or fsdp (none: refuse to run distributed)."""
    backend: Backend = Backend.AUTO
    """Process-group backend."""
    device: DeviceKind = DeviceKind.AUTO
    """Where to compute; under torchrun each process takes the GPU of its LOCAL_RANK."""


@dataclass
class CkptConfig:
    dir: str | None = None
    """Checkpoint directory; None: `<run.out>/checkpoints`."""
    every: int = 0
    """Save every this many steps (0: only at the end). A checkpoint is always written at the end."""
    keep: int = 2
    """Keep the newest this many checkpoints (older ones are deleted)."""
    resume: bool = False
    """Continue from the newest checkpoint in `dir` (the CLI's --resume); start fresh if there is none."""

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ConfigError(f"ckpt.every must be >= 0, got {self.every}")
        if self.keep < 1:
            raise ConfigError(f"ckpt.keep must be >= 1, got {self.keep}")


@dataclass
class RunConfig:
    out: str = "runs/train"
    """Run folder: config.yaml, metrics.jsonl, curves.png and (by default) checkpoints/."""
    seed: int = 0
    """Seeds weight init and torch's generators (the data order has its own seed, mix.seed)."""
    max_steps: int | None = None
    """Stop after this many optimiser steps."""
    max_flops: float | None = None
    """Stop before the training FLOPs (all processes, forward + backward) would exceed this."""
    max_time_s: float | None = None
    """Stop once this much wall time has been spent training (checked after each step)."""
    grad_accum: int = 1
    """Micro-batches per optimiser step (each of pack.batch_size rows per process)."""
    compile: bool = False
    """torch.compile the model (each block under FSDP2). A compile failure stops the run: never a silent eager fallback."""
    dtype: DType = DType.AUTO
    """Compute precision: bf16 autocast, fp32, or auto (bf16 where the device computes it natively)."""
    log_every: int = 10
    """Write a metrics record every this many steps (and at the last step)."""
    peak_flops: float | None = None
    """Peak FLOP/s per process for MFU; None: the data sheet for known GPUs, else a matmul in the run's dtype measured at start."""
    plot: bool = True
    """Write curves.png at the end of the run."""

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_flops is None and self.max_time_s is None:
            raise ConfigError("the run needs a stop: set run.max_steps, run.max_flops or run.max_time_s")
        for name in ("max_steps", "max_flops", "max_time_s", "peak_flops"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"run.{name} must be > 0, got {value}")
        for name in ("grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"run.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig(shards="runs/data/stdlib-bpe4096"))
    """Which prepared shards to train on."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Mixing mode and compression rate p over the run (proxylm.data.schedule)."""
    mix: MixConfig = field(default_factory=MixConfig)
    """Document order and view draws (proxylm.data.mixer)."""
    pack: PackConfig = field(default_factory=PackConfig)
    """Sequence length and rows per process per micro-batch (proxylm.data.packer)."""
    model: ModelSection = field(default_factory=ModelSection)
    """Model shape: a preset plus overrides."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW and the learning-rate schedule."""
    dist: DistConfig = field(default_factory=DistConfig)
    """Devices and data parallelism."""
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    """Checkpoints and resumption."""
    run: RunConfig = field(default_factory=lambda: RunConfig(max_steps=1000))
    """Run folder, seed, stops and precision."""

    def __post_init__(self) -> None:
        if self.run.max_steps is None and self.run.max_flops is None:
            for i, phase in enumerate(self.schedule.phases):
                if phase.fraction is not None:
                    raise ConfigError(
                        f"schedule.phases[{i}].fraction needs the run's planned steps, but only run.max_time_s bounds it: "
                        "set run.max_steps or run.max_flops, or give the phase in steps"
                    )

    @property
    def ckpt_dir(self) -> Path:
        return Path(self.ckpt.dir) if self.ckpt.dir else Path(self.run.out) / "checkpoints"

    def model_config(self, alphabet_size: int) -> ModelConfig:
        """The ModelConfig for shards with this alphabet (byte-only schedules need byte ids only)."""
        from proxylm import vocab

        vocab_size = vocab.vocab_size(alphabet_size) if self.schedule.uses_compression else vocab.BYTE_VOCAB_SIZE
        overrides = {"max_seq_len": self.pack.seq_len, **self.model.overrides()}
        return model_preset(self.model.preset, vocab_size, **overrides)


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    return load_config(TrainConfig, path, overrides)
