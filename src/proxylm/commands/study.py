"""`proxylm study CONFIG.yaml [key=value ...]`: the compute-matched comparison of training arms.

    proxylm study configs/study-cpu.yaml
    proxylm study configs/study-cpu.yaml arms=[bytes,proxy-bpe,raw-only] only_sizes=[tiny]
    proxylm study configs/study-cpu.yaml --parts report            # tables and plots from what exists
    proxylm study configs/study-paper.yaml --parts prepare                      # one process
    torchrun --nproc_per_node 8 -m proxylm study configs/study-paper.yaml only_sizes=[1.5b] --parts train
    proxylm study configs/study-paper.yaml --parts evaluate,stability,report    # one process

A rerun skips finished trials and resumes an interrupted one; see proxylm.study.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML study config (see configs/study-*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. seeds=[0,1] train.optim.lr=1e-3")
    parser.add_argument("--parts", help="comma-separated parts to run: prepare,train,evaluate,stability,report (same as parts=[...]; put key=value overrides before it)")


def run(args: argparse.Namespace) -> int:
    from proxylm.study import is_main_process, load_study_config, run_study

    overrides = list(args.overrides)
    if args.parts:
        overrides.append(f"parts=[{args.parts}]")
    cfg = load_study_config(args.config, overrides)
    if cfg.command is None:
        cfg.command = "proxylm study " + " ".join(shlex.quote(a) for a in [args.config, *args.overrides])
    summary = run_study(cfg)
    if summary is not None and is_main_process():
        print(f"{len(summary['trials'])} trial results; report: {cfg.out}/RESULTS.md" + (f" and {cfg.report_md}" if cfg.report_md else ""))
        for row in summary["rows"]:
            spread = f" ± {row['bpb_std']:.4f}" if row["bpb_std"] is not None else ""
            code = "".join(f", {name} {scores['bpb_mean']:.4f}" for name, scores in row["code"].items())
            print(f"  {row['size']:>8} {row['arm']:<26} bpb {row['bpb_mean']:.4f}{spread}{code}  ({len(row['seeds'])} seeds, {row['flops']:.3g} FLOPs)",
                  file=sys.stdout)
    return 0
