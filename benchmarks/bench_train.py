"""Training throughput of the default CPU model, its MFU, peak memory, and a plain-loop baseline.

    .venv/bin/python benchmarks/bench_train.py [--config configs/tiny-proxy-bpe.yaml] [--steps 40] [--json FILE] [key=value ...]

- Runs `proxylm.train.train` on the tiny CPU config (dim 256, 6 layers, seq 512, batch 8, one raw
  head, bf16 autocast) for --steps steps and reads its steady-state figures from metrics.jsonl
  (the first logging window, with its one-off costs, is left out): symbols/s, raw bytes/s (raw
  views), text bytes/s (raw views plus the text the compressed views stand for) and MFU.
- MFU is against a bf16 matmul peak measured in this process (the best rate of square matmuls of
  512, 1024 and 2048, before the training run and in every round of the step loops), so the
  figure means the same on any machine. The FLOPs are the model's 6N + attention.
- Compile: with `run.compile=true` the report says how many graphs TorchDynamo really compiled
  in the training run, and its graph breaks (a compile failure stops the run).
- Peak RSS: this process's maximum resident set after the training run (target <= 2 GB), and the
  peak summed over it and its children (torch.compile's workers) during the run.
- Baseline: a nanoGPT-style loop written here (embedding, pre-norm blocks with causal SDPA and a
  SwiGLU MLP of the same widths, one output head, fused AdamW, bf16 autocast, random ids) at the
  same shape, compiled when ours is (`run.compile=true`, as nanoGPT does by default); the ratio
  of our symbols/s to its tokens/s (target >= 1.0). It does no document masking, no extra head,
  no data pipeline and no metrics: the ratio is what those cost.
- Shared machines: every loop is timed in wall time and in this process's CPU time. CPU-time
  rates times the thread count estimate an idle machine (other people's load slows the wall
  clock far more than the CPU clock); the ratios and MFU are given both ways.
- What limits the figures is measured, not guessed: our own step loop (`train_step`: data,
  model, metrics, optimiser), the same model on one fixed batch, the data pipeline alone, and
  bf16 matmuls at the model's own shapes. The three step loops run in interleaved rounds and
  each keeps its best round, so a burst of other load does not decide the ratio.
- Shards: the config's, if prepared; otherwise a 300-module subset of the standard library is
  prepared with the config's compressor (in a subprocess, outside the timed and RSS figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F
from torch import nn

from proxylm.data.shards import ShardsError, read_manifest
from proxylm.model import flops_per_token
from proxylm.train import load_train_config, train
from proxylm.train.distributed import CompileStatus, compute_init
from proxylm.train.metrics import read_metrics
from proxylm.train.optim import build_optimizer
from proxylm.train.trainer import Window, autocast, clip_gradients, setup, train_step

REPO = Path(__file__).resolve().parent.parent
MFU_TARGET = 0.40
RATIO_TARGET = 1.0
RSS_TARGET = 2e9
PEAK_SIZES = (512, 1024, 2048)  # square bf16 matmuls whose best rate is the peak


@dataclass
class Rate:
    wall: float  # per wall-clock second
    idle: float  # per CPU-second of this process x torch threads: an idle-machine estimate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny-proxy-bpe.yaml"))
    parser.add_argument("--steps", type=int, default=40, help="steps of the full training run (logged every 5)")
    parser.add_argument("--loop-steps", type=int, default=4, help="timed steps per round of each component loop")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the component loops; the best counts")
    parser.add_argument("--json", default=None, help="write the figures here as one JSON object")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    shards = ensure_shards(load_train_config(args.config, args.overrides), work)
    peak = matmul_peak()
    overrides = [*args.overrides, f"data.shards={shards}", "data.corpus=null", f"run.max_steps={args.steps}",
                 "run.log_every=5", f"run.peak_flops={peak.wall}", "ckpt.every=0", f"run.out={work / 'run'}",
                 "run.plot=false", "run.max_flops=null", "run.max_time_s=null"]
    cfg = load_train_config(args.config, overrides)
    model_cfg = cfg.model_config(int(read_manifest(shards)["compressor"]["alphabet_size"]))
    B, T = cfg.pack.batch_size, cfg.pack.seq_len
    fpt = flops_per_token(model_cfg, T)

    with TreeRSS() as tree:
        result = train(cfg)
    compiled = CompileStatus.now()  # before the loops below compile anything of their own
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    job = setup(load_train_config(args.config, [*overrides, f"run.out={work / 'parts'}"]), compute_init(cfg.dist))
    plain_step, plain_fpt = plain_loop(model_cfg, B, T, cfg.optim, compile=cfg.run.compile)
    loops = {"ours": (our_step(job), B * T), "model_only": (model_only_step(job), B * T), "plain": (plain_step, B * T),
             **{f"peak{size}": matmul_step(size) for size in PEAK_SIZES}}
    best = best_of_rounds(loops, args.rounds, args.loop_steps)
    ours, model_only, plain = best["ours"], best["model_only"], best["plain"]
    peaks = [peak, *(best[f"peak{size}"] for size in PEAK_SIZES)]
    peak = Rate(max(r.wall for r in peaks), max(r.idle for r in peaks))
    data = timed(lambda: job.loader.next_batch(0), 4 * args.loop_steps, B * T)
    run = steady_state(read_metrics(result.metrics), peak.wall)

    figures = {
        "device": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "load_average": os.getloadavg(),
        "compile": cfg.run.compile,
        "compiled": {"graphs": compiled.graphs, "graph_breaks": compiled.graph_breaks},  # what torch.compile really did
        "model": {"preset": cfg.model.preset, "dim": model_cfg.dim, "n_layers": model_cfg.n_layers, "vocab_size": model_cfg.vocab_size,
                  "output_heads": model_cfg.n_output_heads, "seq_len": T, "batch_size": B, "flops_per_token": fpt},
        "bf16_peak_flops": asdict(peak),
        "run": run,
        "symbols_per_s": asdict(ours),
        "mfu": {"wall": ours.wall * fpt / peak.wall, "idle": ours.idle * fpt / peak.idle},
        "peak_rss_bytes": peak_rss,
        "peak_rss_tree_bytes": tree.peak,
        "plain_tokens_per_s": asdict(plain),
        "plain_mfu": {"wall": plain.wall * plain_fpt / peak.wall, "idle": plain.idle * plain_fpt / peak.idle},
        "ratio_to_plain": {"wall": ours.wall / plain.wall, "idle": ours.idle / plain.idle},
        "model_only_symbols_per_s": asdict(model_only),
        "model_only_mfu": {"wall": model_only.wall * fpt / peak.wall, "idle": model_only.idle * fpt / peak.idle},
        "data_pipeline_symbols_per_s": asdict(data),
        "matmul_flops_at_model_shapes": matmul_rates_at_model_shapes(model_cfg, B * T),
    }
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


# ---- measuring ---------------------------------------------------------------------------------


def timed(step, steps: int, units_per_step: float, warmup: int = 2) -> Rate:
    for _ in range(warmup):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Rate(wall=steps * units_per_step / wall, idle=steps * units_per_step / cpu * torch.get_num_threads())


def matmul_step(size: int, calls: int = 4):
    """A step of `calls` bf16 size^3 matmuls, and its FLOPs."""
    a, b = torch.randn(size, size, dtype=torch.bfloat16), torch.randn(size, size, dtype=torch.bfloat16)

    def step():
        for _ in range(calls):
            a @ b

    return step, calls * 2 * size**3


def matmul_peak(rounds: int = 4) -> Rate:
    """The best bf16 matmul FLOP/s over square sizes 512..2048 (wall, and the best idle estimate)."""
    rates = [timed(step, 2, flops, warmup=1) for size in PEAK_SIZES for step, flops in [matmul_step(size)] for _ in range(rounds)]
    return Rate(max(r.wall for r in rates), max(r.idle for r in rates))


def steady_state(records: list[dict], peak: float) -> dict[str, float]:
    """Wall-clock rates of the training run over every logging window but the first."""
    first, last = records[0], records[-1]
    seconds = last["time_s"] - first["time_s"]
    durations = [b["time_s"] - a["time_s"] for a, b in zip(records, records[1:])]
    return {
        "symbols_per_s": (last["symbols"] - first["symbols"]) / seconds,
        "raw_bytes_per_s": (last["raw_bytes"] - first["raw_bytes"]) / seconds,
        "text_bytes_per_s": sum(r["text_bytes_per_s"] * d for r, d in zip(records[1:], durations)) / seconds,
        "mfu": (last["flops"] - first["flops"]) / seconds / peak,
    }


def best_of_rounds(loops: dict, rounds: int, steps: int) -> dict[str, Rate]:
    """Each loop's best round, the loops interleaved so that a burst of other load hits them alike."""
    for step, _ in loops.values():
        step(), step()  # compile and warm the allocator
    best = {name: Rate(0.0, 0.0) for name in loops}
    for _ in range(rounds):
        for name, (step, units) in loops.items():
            rate = timed(step, steps, units, warmup=0)
            best[name] = Rate(max(best[name].wall, rate.wall), max(best[name].idle, rate.idle))
    return best


def our_step(job):
    """Our full step as the trainer runs it: loader, forward, backward, metrics, clip, AdamW."""
    window = Window(job)
    return lambda: train_step(job, 1e-4, window)


def model_only_step(job):
    """Our model's forward, backward and AdamW step on one fixed batch."""
    batch = job.loader.next_batch(0)
    model, optimizer = job.model, job.optimizer

    def step():
        with autocast(job):
            loss = model(batch.ids, batch.pos, batch.doc, batch.targets, batch.weights).loss
        loss.backward()
        clip_gradients(model, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def matmul_rates_at_model_shapes(model_cfg, rows: int) -> dict[str, float]:
    """bf16 FLOP/s (wall, best of 3 rounds) of (rows x dim) @ (dim x out) for the model's widths."""
    rates = {}
    for name, out in (("attention", model_cfg.dim), ("mlp", model_cfg.ffn_hidden_dim), ("head", model_cfg.vocab_size)):
        a = torch.randn(rows, model_cfg.dim, dtype=torch.bfloat16)
        b = torch.randn(model_cfg.dim, out, dtype=torch.bfloat16)
        flops = 2 * rows * model_cfg.dim * out
        rates[f"{name} {rows}x{model_cfg.dim}x{out}"] = max(timed(lambda: a @ b, 5, flops, warmup=1).wall for _ in range(3))
    return rates


class TreeRSS:
    """Peak summed RSS of this process and its children (torch.compile's workers), polled every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "TreeRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.05):
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)


def ensure_shards(cfg, work: Path) -> Path:
    """The config's shards if they are complete, else a small stdlib subset prepared now."""
    try:
        read_manifest(Path(cfg.data.shards))
        return Path(cfg.data.shards)
    except ShardsError:
        pass
    out = work / "shards"
    subprocess.run([sys.executable, "-m", "proxylm", "prepare", "--corpus", cfg.data.corpus or "stdlib",
                    "--compressor", cfg.data.compressor, "--out", str(out), "--limit", "300"], check=True)
    return out


# ---- the nanoGPT-style baseline ----------------------------------------------------------------


class PlainBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, hidden: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, T, 3, self.n_heads, C // self.n_heads)  # (B, T, 3, nh, hs)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, T, hs) each
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)  # (B, T, hidden) each
        return x + self.down(F.silu(gate) * up)


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, dim: int, n_layers: int, n_heads: int, hidden: int, seq_len: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(seq_len, dim)
        self.blocks = nn.ModuleList(PlainBlock(dim, n_heads, hidden) for _ in range(n_layers))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def plain_loop(model_cfg, B: int, T: int, optim_cfg, compile: bool):
    """One step of the plain loop, and its FLOPs per token (the same 6N + attention count as ours)."""
    torch.manual_seed(0)
    model = PlainGPT(model_cfg.vocab_size, model_cfg.dim, model_cfg.n_layers, model_cfg.n_heads, model_cfg.ffn_hidden_dim, T)
    if compile:  # as nanoGPT does by default; ours is compiled too when this is
        model.compile()
    optimizer = build_optimizer(model, optim_cfg)
    ids = torch.randint(0, model_cfg.vocab_size, (B, T + 1))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    matmul_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("tok.", "pos.")))
    return step, 6 * matmul_params + 12 * model_cfg.n_layers * model_cfg.dim * T


# ---- the report --------------------------------------------------------------------------------


def report(f: dict) -> None:
    m, r = f["model"], f["run"]
    both = lambda d, fmt: f"{format(d['wall'], fmt)} wall / {format(d['idle'], fmt)} idle est."  # noqa: E731
    print(f"\ndevice: {f['device']}; load average {', '.join(f'{x:.1f}' for x in f['load_average'])}")
    print(f"model: {m['preset']} dim {m['dim']} x {m['n_layers']} layers, vocab {m['vocab_size']}, {m['output_heads']} output heads, "
          f"seq {m['seq_len']} x batch {m['batch_size']}, {m['flops_per_token'] / 1e6:.1f} MFLOP/token, "
          f"torch.compile {'on' if f['compile'] else 'off'} (both loops)")
    if f["compile"]:
        c = f["compiled"]
        print(f"torch.compile in the training run: {c['graphs']} graphs compiled, {c['graph_breaks']} graph breaks"
              + ("" if c["graphs"] else " -- NOTHING COMPILED: the figures below are eager"))
    print(f"bf16 matmul peak (best square matmul in this process): {f['bf16_peak_flops']['wall'] / 1e9:.0f} GFLOP/s wall, "
          f"{f['bf16_peak_flops']['idle'] / 1e9:.0f} idle est.")
    print(f"training run (metrics.jsonl, wall, average under the load of the moment): {r['symbols_per_s']:.0f} symbols/s, "
          f"{r['raw_bytes_per_s']:.0f} raw bytes/s, {r['text_bytes_per_s']:.0f} text bytes/s, "
          f"MFU {r['mfu']:.1%}")
    print(f"our step loop (best round): {both(f['symbols_per_s'], '.0f')} symbols/s; MFU {both(f['mfu'], '.1%')} (target {MFU_TARGET:.0%})")
    print(f"plain loop:    {both(f['plain_tokens_per_s'], '.0f')} tokens/s;  MFU {both(f['plain_mfu'], '.1%')}")
    print(f"ratio ours / plain: {both(f['ratio_to_plain'], '.2f')} (target >= {RATIO_TARGET})")
    print(f"peak RSS: {f['peak_rss_bytes'] / 1e9:.2f} GB, with child processes {f['peak_rss_tree_bytes'] / 1e9:.2f} GB "
          f"(target <= {RSS_TARGET / 1e9:.0f} GB)")
    print("what limits them:")
    print(f"  our model alone on one fixed batch: {both(f['model_only_symbols_per_s'], '.0f')} symbols/s, "
          f"MFU {both(f['model_only_mfu'], '.1%')}")
    print(f"  data pipeline alone: {both(f['data_pipeline_symbols_per_s'], '.0f')} symbols/s")
    for name, rate in f["matmul_flops_at_model_shapes"].items():
        print(f"  bf16 matmul {name}: {rate / 1e9:.0f} GFLOP/s wall ({rate / f['bf16_peak_flops']['wall']:.0%} of the peak)")


if __name__ == "__main__":
    sys.exit(main())
