"""What the training stream delivers: the mixture per window, whole pairs, padding, loader speed.

    .venv/bin/python benchmarks/bench_stream.py [--config configs/tiny-proxy-bpe.yaml] [--steps 200] [--json FILE] [key=value ...]

- Builds the config's loader exactly as `proxylm train` does (shards prepared on first use) and
  draws --steps steps of batches, no model. Every figure is read back from the batches by
  `proxylm.data.audit.StreamAudit`, not from the packer's own counters.
- Compressed share: compressed-view positions / (raw + compressed view positions), per 10-step
  window after the schedule's first phase (the warm-up), with its mean, the largest deviation
  from that mean (target <= 0.10) and the share the rate implies, sum over documents of
  p-weighted view lengths, computed from the shards' mean lengths.
- Whole pairs: of the translation pairs no longer than a row, the share that lies in one row
  (target >= 99%). Padding: padding positions / all positions (target <= 5%).
- Loader throughput: positions per second of wall time and of this process's CPU time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from proxylm.data.audit import StreamAudit
from proxylm.data.loader import Loader
from proxylm.data.schedule import Schedule
from proxylm.train import load_train_config
from proxylm.train.distributed import DistInfo
from proxylm.train.trainer import open_shards


def expected_share(shards, rate: float, sample: int = 2000) -> float:
    """The compressed share of view positions that rate p implies for unpaired views of these pieces."""
    idx = np.linspace(0, len(shards) - 1, min(sample, len(shards))).astype(int)
    raw = np.mean([shards.raw_length(i) + 2 for i in idx])
    compressed = np.mean([shards.symbols_length(i) + 2 for i in idx])
    return rate * compressed / (rate * compressed + (1 - rate) * raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny-proxy-bpe.yaml")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--json", default=None, metavar="FILE")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    cfg = load_train_config(args.config, args.overrides)
    shards = open_shards(cfg.data, DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None))
    model_cfg = cfg.model_config(shards.alphabet_size)
    schedule = Schedule(cfg.schedule, args.steps)
    loader = Loader(shards, schedule, cfg.mix, cfg.pack, n_main_heads=model_cfg.n_main_heads,
                    n_raw_heads=model_cfg.n_raw_heads, grad_accum=cfg.run.grad_accum)
    audit = StreamAudit(seq_len=cfg.pack.seq_len)
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(args.steps):
        for micro in range(cfg.run.grad_accum):
            audit.add(step, loader.next_batch(step), row_offset=micro * cfg.pack.batch_size)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    final = schedule.at(args.steps - 1)
    warmup = next(s for s in range(args.steps) if schedule.at(s) == final)  # the first step of the final mixture
    windows = audit.window_shares(args.window, since=warmup)
    final_rate = schedule.at(args.steps - 1).rate
    positions = args.steps * cfg.run.grad_accum * cfg.pack.tokens_per_batch
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "steps": args.steps,
        "pieces": len(shards),
        "max_piece_bytes": shards.manifest.get("max_piece_bytes"),
        "seq_len": cfg.pack.seq_len,
        "rows_per_step": cfg.pack.batch_size * cfg.run.grad_accum,
        "window_steps": args.window,
        "after_step": warmup,
        "window_shares": [round(float(s), 4) for s in windows],
        "share_mean": round(float(windows.mean()), 4) if len(windows) else None,
        "share_max_deviation": round(float(np.abs(windows - windows.mean()).max()), 4) if len(windows) else None,
        "share_implied_by_rate": round(expected_share(shards, final_rate), 4),
        "pairs_whole": audit.pairs_whole,
        "pairs_cut": audit.pairs_cut,
        "pairs_longer_than_a_row": audit.pairs_too_long,
        "pairs_whole_share": audit.pairs_whole_share(),
        "padding_share": round(audit.padding_share(), 5),
        "documents_per_batch_mean": round(float(np.mean(audit.documents_per_batch)), 2),
        "loader_positions_per_s": round(positions / wall),
        "loader_positions_per_cpu_s": round(positions / max(cpu, 1e-9)),
    }
    for key, value in result.items():
        print(f"{key:<28} {value}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    sys.exit(main())
