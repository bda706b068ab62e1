"""`proxylm train CONFIG.yaml [key=value ...] [--resume]`: train from a config, on one process or under torchrun.

    proxylm train configs/tiny-proxy-bpe.yaml model.dim=256 run.max_steps=500
    torchrun --nproc_per_node 2 -m proxylm train configs/tiny-proxy-bpe.yaml dist.strategy=fsdp
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML training config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. model.dim=256 optim.lr=3e-4")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in ckpt.dir (same as ckpt.resume=true)")


def run(args: argparse.Namespace) -> int:
    from proxylm.train import load_train_config, train
    from proxylm.train.distributed import print0

    cfg = load_train_config(args.config, args.overrides)
    if args.resume:
        cfg.ckpt.resume = True
    result = train(cfg)
    print0(f"trained {result.steps} steps, {result.flops:.3g} FLOPs, {result.train_time_s:.1f} s")
    print0(f"loss {_fmt(result.loss)}  raw {_fmt(result.loss_raw)}  compressed {_fmt(result.loss_compressed)} (nats/symbol)")
    print0(f"checkpoint {result.checkpoint}")
    print0(f"metrics {result.metrics}" + (f"  plot {result.plot}" if result.plot else ""))
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
