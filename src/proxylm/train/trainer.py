"""The training loop: `train(cfg) -> TrainResult`, on one CPU, one GPU or under torchrun.

Design choices:
- `train` reads as the recipe: set up the job (data, model, optimiser, loader, resumed state),
  then step until a stop, logging and checkpointing on the way. Each part is a small function.
- Everything that can be wrong with the inputs (config, shards, compressor, checkpoint shape,
  world size, loader state) fails before the first step, with a UserError naming it.
- Build on the meta device, compile and shard (FSDP2), then `to_empty` and `init_weights`; DDP
  wraps the initialised model (torchtitan / lingua). On CPUs FSDP2 shards an initialised model
  (DTensor's RNG is exact on GPUs only), so every strategy starts from the same weights.
- Precision: bf16 autocast over fp32 weights (CPU and GPU); under FSDP2 the MixedPrecisionPolicy
  casts instead. Losses are computed in fp32 by the model.
- Gradient accumulation sums micro-batch gradients of loss / grad_accum; gradient sync happens
  on the last micro-batch only (DDP `no_sync`, FSDP2 `set_requires_gradient_sync`).
- Exact resumption: weights, optimiser moments, the loader's position and every RNG are
  restored, the learning rate is a function of the step, and the metrics file is cut back to the
  checkpoint's step; on a deterministic CPU the resumed run's losses equal the uninterrupted run's.
- Metrics are summed on the device over the steps between two records and synchronised once per
  record, so logging costs no per-step host sync.
- Throughput: symbols/s counts every non-pad position; raw bytes/s the bytes read in raw views
  (Batch.raw_bytes); text bytes/s adds the bytes the compressed views stood for, estimated with
  the split's compression ratio: the text a proxy run covers per second.
- FLOPs per step come from `proxylm.model.flops_per_token` (6N + attention) times the symbols
  per step of all processes, padding included: what the hardware computes.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from proxylm import vocab
from proxylm.config import dump_yaml
from proxylm.data.batch import Batch
from proxylm.data.loader import Loader
from proxylm.data.schedule import Schedule
from proxylm.data.shards import Shards, ShardsError, read_manifest
from proxylm.errors import UserError
from proxylm.io import atomic_write_text
from proxylm.model import ModelConfig, Transformer, flops_per_token
from proxylm.train import checkpoint
from proxylm.train.checkpoint import Counters
from proxylm.train.config import DataConfig, DType, TrainConfig, resolve_dtype
from proxylm.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    compile_failures,
    compute_cleanup,
    compute_init,
    parallelize,
    uses_fsdp,
)
from proxylm.train.metrics import MetricsLog, device_peak_flops, plot_metrics, read_metrics
from proxylm.train.optim import build_optimizer, lr_at, set_lr

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "curves.png"
CONFIG_FILE = "config.yaml"
RESULT_RECORDS = 5  # the result's losses average this many final records
# Sums kept per logging window, in this order (one tensor, one all-reduce per record).
_SUMS = ("loss", "micro_batches", "raw_ce", "raw_positions", "compressed_ce", "compressed_positions")


@dataclass
class TrainResult:
    run_dir: Path  # config.yaml, metrics.jsonl, curves.png
    checkpoint: Path  # the final checkpoint (load_model(checkpoint) works on it)
    plot: Path | None  # curves.png, None when plotting is off
    metrics: Path  # metrics.jsonl
    steps: int  # optimiser steps completed
    loss: float | None  # mean training loss over the last RESULT_RECORDS records (of this run)
    loss_raw: float | None  # main-head CE on raw positions, same window (None if none were seen)
    loss_compressed: float | None  # main-head CE on compressed positions, same window
    flops: float  # training FLOPs, all processes
    symbols: int  # symbols trained on, all processes
    raw_bytes: int  # raw document bytes covered, all processes
    train_time_s: float  # wall time in training steps


@dataclass
class Plan:
    flops_per_step: float  # all processes, forward + backward
    symbols_per_step: int  # positions per optimiser step, all processes
    total_steps: int | None  # None: bounded by wall time only


@dataclass
class Job:
    cfg: TrainConfig
    info: DistInfo
    shards: Shards
    model_cfg: ModelConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: Loader
    plan: Plan
    counters: Counters
    run_dir: Path
    data_info: dict[str, Any]
    metrics: MetricsLog | None  # rank 0 only
    peak_flops: float  # per process, for MFU
    resumed_from: Path | None  # the checkpoint this run continued, if any

    @property
    def compression_ratio(self) -> float:
        """Raw bytes per compressed symbol in the training split (manifest)."""
        return float(self.shards.manifest["splits"][self.cfg.data.split].get("ratio") or 0.0)


def train(cfg: TrainConfig) -> TrainResult:
    """Train as `cfg` says (resuming if cfg.ckpt.resume); returns where everything went."""
    info = compute_init(cfg.dist)
    try:
        with compile_failures(cfg.run.compile):
            job = setup(cfg, info)
            return fit(job)
    finally:
        compute_cleanup()


# ---- setup -------------------------------------------------------------------------------------


def setup(cfg: TrainConfig, info: DistInfo) -> Job:
    # Measured before seeding, so the peak's random matrices do not shift the initial weights.
    cfg.run.dtype = resolve_dtype(cfg.run.dtype, info.device)
    compute_dtype = torch.bfloat16 if cfg.run.dtype is DType.BF16 else torch.float32
    peak_flops = cfg.run.peak_flops or (device_peak_flops(info.device, compute_dtype) if info.is_main else 0.0)
    torch.manual_seed(cfg.run.seed)
    if info.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    shards = open_shards(cfg.data, info)
    model_cfg = cfg.model_config(shards.alphabet_size)
    resume_from, state = find_resume_point(cfg, model_cfg, info)
    plan = plan_run(cfg, model_cfg, info)
    model = build_model(model_cfg, cfg, info)
    optimizer = build_optimizer(model, cfg.optim)
    loader = Loader(
        shards, Schedule(cfg.schedule, plan.total_steps), cfg.mix, cfg.pack,
        n_main_heads=model_cfg.n_main_heads, n_raw_heads=model_cfg.n_raw_heads, rank=info.rank, world_size=info.world_size,
        grad_accum=cfg.run.grad_accum,
    )
    counters = Counters()
    if resume_from is not None:
        counters = checkpoint.restore(resume_from, model, optimizer, loader, state, info)
    run_dir, metrics = Path(cfg.run.out), None
    if info.is_main:  # only now: a run refused above leaves an existing run folder as it was
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_FILE, dump_yaml(cfg))
        metrics = MetricsLog(run_dir / METRICS_FILE, resume_step=counters.step if resume_from else None)
    return Job(
        cfg=cfg, info=info, shards=shards, model_cfg=model_cfg, model=model, optimizer=optimizer, loader=loader,
        plan=plan, counters=counters, run_dir=run_dir, metrics=metrics,
        data_info=checkpoint.data_info(shards, cfg.data.split, model_cfg.vocab_size),
        peak_flops=peak_flops, resumed_from=resume_from,
    )


def open_shards(cfg: DataConfig, info: DistInfo) -> Shards:
    """The configured shards, prepared first (by rank 0) if a corpus is given and they are not complete."""
    if cfg.corpus is not None:
        try:
            read_manifest(Path(cfg.shards))
        except ShardsError:
            if info.is_main:
                from proxylm.data.prepare import prepare

                prepare(cfg.corpus, cfg.compressor, cfg.shards, progress=True, **cfg.prepare_options())
            barrier(info)
    try:
        shards = Shards.open(cfg.shards, cfg.split)
    except ShardsError as exc:
        hint = "" if cfg.corpus else " (run `proxylm prepare`, or set data.corpus and data.compressor to prepare on first use)"
        raise UserError(f"data.shards: {exc}{hint}") from None
    if cfg.compressor is not None:
        check_compressor(cfg.compressor, shards)
    check_pieces(cfg, shards)
    return shards


def check_pieces(cfg: DataConfig, shards: Shards) -> None:
    """The shards must be cut into the pieces the config asks for, when it asks."""
    prepared = shards.manifest.get("max_piece_bytes")
    if cfg.max_piece_bytes is not None and prepared != cfg.max_piece_bytes:
        raise UserError(
            f"data.max_piece_bytes is {cfg.max_piece_bytes} but {cfg.shards} was prepared with pieces of "
            f"{prepared or 'any'} bytes; prepare it again (`proxylm prepare --max-piece-bytes {cfg.max_piece_bytes}`) "
            "or point data.shards at another directory"
        )


def check_compressor(spec: str, shards: Shards) -> None:
    """The shards must come from the compressor the config names (same name, same given parameters)."""
    from proxylm.compress import parse_spec

    name, params = parse_spec(spec)
    saved = shards.compressor_config
    differs = name != saved.get("name") or any(key in saved and saved[key] != value for key, value in params.items())
    if differs:
        prepared_with = shards.manifest["compressor"].get("spec", saved.get("name"))
        raise UserError(
            f"data.compressor is {spec!r} but {shards.directory / 'manifest.json'} was prepared with {prepared_with!r}; "
            "point data.shards at shards of that compressor or change data.compressor"
        )


def find_resume_point(cfg: TrainConfig, model_cfg: ModelConfig, info: DistInfo) -> tuple[Path | None, dict | None]:
    """The newest checkpoint to resume from (checked against this run), or (None, None)."""
    if not cfg.ckpt.resume:
        return None, None
    path = checkpoint.latest_checkpoint(cfg.ckpt_dir)
    if path is None:
        return None, None
    state = checkpoint.read_train_state(path)
    checkpoint.check_compatible(path, model_cfg, info.world_size, state)
    return path, state


def plan_run(cfg: TrainConfig, model_cfg: ModelConfig, info: DistInfo) -> Plan:
    seq_len = cfg.pack.seq_len
    symbols_per_step = cfg.pack.batch_size * seq_len * cfg.run.grad_accum * info.world_size
    flops_per_step = flops_per_token(model_cfg, seq_len) * symbols_per_step
    bounds = []
    if cfg.run.max_steps is not None:
        bounds.append(cfg.run.max_steps)
    if cfg.run.max_flops is not None:
        steps = int(cfg.run.max_flops // flops_per_step)
        if steps < 1:
            raise UserError(f"run.max_flops={cfg.run.max_flops:.3g} is less than one step ({flops_per_step:.3g} FLOPs)")
        bounds.append(steps)
    return Plan(flops_per_step=flops_per_step, symbols_per_step=symbols_per_step, total_steps=min(bounds) if bounds else None)


def build_model(model_cfg: ModelConfig, cfg: TrainConfig, info: DistInfo) -> nn.Module:
    """Meta build, then compile / shard and initialise. Sharded parameters are initialised in
    place only on GPUs, where DTensor's RNG gives every shard its part of one full-tensor draw;
    on CPUs the full model is initialised first (same seed on every rank), then sharded."""
    with torch.device("meta"):
        model = Transformer(model_cfg)
    init_sharded = uses_fsdp(info, cfg.dist.strategy) and info.device.type == "cuda"
    if not init_sharded:
        _materialize(model, info.device)
    model = parallelize(model, info, cfg)
    if init_sharded:
        _materialize(model, info.device)
    return model


def _materialize(model: nn.Module, device: torch.device) -> None:
    model.to_empty(device=device)
    with torch.no_grad():
        model.init_weights()


# ---- the loop ----------------------------------------------------------------------------------


def fit(job: Job) -> TrainResult:
    cfg, counters = job.cfg, job.counters
    window = Window(job)
    recent: list[dict[str, Any]] = []  # the last records, on every rank, for the result
    progress = _progress_bar(job)
    saved_at = counters.step if job.resumed_from is not None else None
    while not should_stop(job):
        lr = lr_at(counters.step, lr_horizon(job), cfg.optim)
        started = time.perf_counter()
        grad_norm = train_step(job, lr, window)
        counters.step += 1
        counters.flops += job.plan.flops_per_step
        log_now = counters.step % cfg.run.log_every == 0 or counters.step == job.plan.total_steps
        if log_now and job.info.device.type == "cuda":
            torch.cuda.synchronize()  # queued GPU work belongs to this window's time
        counters.train_time_s += time.perf_counter() - started
        window.steps += 1
        if log_now or should_stop(job):
            record = window.flush(lr, grad_norm)
            recent = [*recent[-(RESULT_RECORDS - 1):], record]
            if job.metrics is not None:
                job.metrics.write(record)
            progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
        progress.update(1)
        if cfg.ckpt.every and counters.step % cfg.ckpt.every == 0:
            saved_at = save_checkpoint(job, window)
    progress.close()
    if saved_at != counters.step:
        save_checkpoint(job, window)
    return finish(job, cfg.ckpt_dir / checkpoint.step_dir_name(counters.step), recent)


def should_stop(job: Job) -> bool:
    total, max_time = job.plan.total_steps, job.cfg.run.max_time_s
    if total is not None and job.counters.step >= total:
        return True
    return max_time is not None and job.counters.train_time_s >= max_time


def lr_horizon(job: Job) -> int:
    """Steps the cosine runs over: the plan, or for a run bounded by wall time only, the steps
    its speed so far says will fit."""
    if job.plan.total_steps is not None:
        return job.plan.total_steps
    c = job.counters
    if c.step == 0:
        return job.cfg.optim.warmup_steps + 1
    return max(c.step + 1, int(c.step * job.cfg.run.max_time_s / c.train_time_s))


def train_step(job: Job, lr: float, window: "Window") -> torch.Tensor:
    """One optimiser step over grad_accum micro-batches; returns the gradient norm before clipping."""
    model, optimizer, accum = job.model, job.optimizer, job.cfg.run.grad_accum
    model.train()
    for micro in range(accum):
        batch = job.loader.next_batch(job.counters.step)
        job.counters.max_position = max(job.counters.max_position, int(batch.pos.max()) + 1)
        batch = batch.to(job.info.device, non_blocking=True)
        with gradient_sync(model, enabled=micro == accum - 1), autocast(job):
            out = model(batch.ids, batch.pos, batch.doc, batch.targets, batch.weights)
            (out.loss / accum).backward()
        window.add(out.loss.detach(), out.position_loss.detach(), batch)
    grad_norm = clip_gradients(model, job.cfg.optim.grad_clip)
    set_lr(optimizer, lr)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def gradient_sync(model: nn.Module, enabled: bool):
    """Skip the gradient all-reduce / reduce-scatter on all but the last micro-batch."""
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()
    if hasattr(model, "no_sync") and not enabled:  # DDP
        return model.no_sync()
    return contextlib.nullcontext()


def autocast(job: Job):
    # Under FSDP2 the MixedPrecisionPolicy already runs the blocks in bf16.
    enabled = job.cfg.run.dtype is DType.BF16 and not uses_fsdp(job.info, job.cfg.dist.strategy)
    return torch.autocast(device_type=job.info.device.type, dtype=torch.bfloat16, enabled=enabled)


def clip_gradients(model: nn.Module, max_norm: float) -> torch.Tensor:
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else math.inf)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2 returns a DTensor


class Window:
    """Metric sums since the last record, kept on the device until a record or checkpoint needs them."""

    def __init__(self, job: Job):
        self.job = job
        self.sums = torch.zeros(len(_SUMS), dtype=torch.float64, device=job.info.device)
        self.counts = torch.zeros(2, dtype=torch.float64, device=job.info.device)  # symbols, raw bytes
        self.steps = 0
        self.symbols = self.raw_bytes = 0.0  # all processes, since the last record
        self.time_at_start = job.counters.train_time_s

    def add(self, loss: torch.Tensor, position_loss: torch.Tensor, batch: Batch) -> None:
        raw, compressed = batch.is_raw, batch.is_compressed
        self.sums += torch.stack([
            loss.double(), torch.ones_like(loss, dtype=torch.float64),
            (position_loss * raw).sum().double(), raw.sum().double(),
            (position_loss * compressed).sum().double(), compressed.sum().double(),
        ])  # (len(_SUMS),)
        self.counts[0] += (batch.ids != vocab.PAD).sum()
        self.counts[1] += batch.raw_bytes

    def absorb_counts(self) -> None:
        """Add every process's symbols and raw bytes to the run's counters (collective)."""
        symbols, raw_bytes = all_reduce_sum(self.counts, self.job.info).tolist()
        self.job.counters.symbols += int(symbols)
        self.job.counters.raw_bytes += int(raw_bytes)
        self.symbols += symbols
        self.raw_bytes += raw_bytes
        self.counts.zero_()

    def flush(self, lr: float, grad_norm: torch.Tensor) -> dict[str, Any]:
        """The record for the current step (collective), and a fresh window."""
        job, c = self.job, self.job.counters
        self.absorb_counts()
        sums = dict(zip(_SUMS, all_reduce_sum(self.sums, job.info).tolist()))
        elapsed = max(c.train_time_s - self.time_at_start, 1e-9)
        flops_per_s = job.plan.flops_per_step * self.steps / elapsed
        point = job.loader.schedule.at(c.step - 1)
        record = {
            "step": c.step,
            "loss": sums["loss"] / sums["micro_batches"],
            "loss_raw": _ratio(sums["raw_ce"], sums["raw_positions"]),
            "loss_compressed": _ratio(sums["compressed_ce"], sums["compressed_positions"]),
            "lr": lr,
            "rate": point.rate,
            "mode": point.mode.value,
            "compressed_share": _ratio(sums["compressed_positions"], sums["raw_positions"] + sums["compressed_positions"]),
            "grad_norm": float(grad_norm),
            "symbols_per_s": self.symbols / elapsed,
            "raw_bytes_per_s": self.raw_bytes / elapsed,
            "text_bytes_per_s": (self.raw_bytes + sums["compressed_positions"] * job.compression_ratio) / elapsed,
            "flops_per_s": flops_per_s,
            "mfu": _ratio(flops_per_s / job.info.world_size, job.peak_flops),
            "flops": c.flops,
            "symbols": c.symbols,
            "raw_bytes": c.raw_bytes,
            "time_s": c.train_time_s,
        }
        self.sums.zero_()
        self.steps = 0
        self.symbols = self.raw_bytes = 0.0
        self.time_at_start = c.train_time_s
        return record


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _progress_bar(job: Job):
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal only, so a log file holds no progress-bar frames
    return tqdm(total=job.plan.total_steps, initial=job.counters.step, desc="train", unit="step",
                disable=None if job.info.is_main else True, dynamic_ncols=True)


def save_checkpoint(job: Job, window: Window) -> int:
    """Write a checkpoint of the current step (collective); returns the step."""
    window.absorb_counts()
    checkpoint.save(
        job.cfg.ckpt_dir, job.model, job.optimizer, job.loader, job.counters, job.model_cfg, job.cfg,
        {**job.data_info, "trained_context": job.counters.max_position}, job.cfg.ckpt.keep, job.info,
    )
    return job.counters.step


def finish(job: Job, final: Path, recent: list[dict[str, Any]]) -> TrainResult:
    metrics_path = job.run_dir / METRICS_FILE
    plot = None
    if job.metrics is not None:
        job.metrics.close()
        records = read_metrics(metrics_path)
        if job.cfg.run.plot and records:
            plot = plot_metrics(records, job.run_dir / PLOT_FILE)
    c = job.counters
    return TrainResult(
        run_dir=job.run_dir, checkpoint=final, plot=plot, metrics=metrics_path, steps=c.step,
        loss=_mean(recent, "loss"), loss_raw=_mean(recent, "loss_raw"), loss_compressed=_mean(recent, "loss_compressed"),
        flops=c.flops, symbols=c.symbols, raw_bytes=c.raw_bytes, train_time_s=c.train_time_s,
    )


def _mean(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else None
