"""Test helper: train in a fresh process (alone or under torchrun) and report what each rank holds.

    python tests/run_train.py REPORT_DIR [--config CONFIG.yaml] [--kill-after-save STEP | --kill-at-step STEP] key=value ...

Writes REPORT_DIR/rank<R>.json with a digest of the full weights as this rank sees them, so a
test can check that the ranks agree. With --kill-after-save the process SIGKILLs itself right
after the checkpoint of STEP is complete: a crash at the worst convenient moment. With
--kill-at-step it does so when step STEP is done and the next one starts, wherever the last
checkpoint was: a crash between checkpoints.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("report_dir", type=Path)
    parser.add_argument("--config", default=None)
    parser.add_argument("--kill-after-save", type=int, default=None)
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(1)

    from proxylm.train import checkpoint, load_train_config, trainer
    from proxylm.train.distributed import compute_cleanup, compute_init
    from proxylm.train.trainer import fit, setup

    if args.kill_after_save is not None:
        write = checkpoint.write_checkpoint

        def write_then_die(ckpt_dir, step, *rest, **kwargs):
            path = write(ckpt_dir, step, *rest, **kwargs)
            if step == args.kill_after_save:
                os.kill(os.getpid(), signal.SIGKILL)
            return path

        checkpoint.write_checkpoint = write_then_die

    if args.kill_at_step is not None:
        step = trainer.train_step

        def die_then_step(job, *rest, **kwargs):
            if job.counters.step == args.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)
            return step(job, *rest, **kwargs)

        trainer.train_step = die_then_step

    cfg = load_train_config(args.config, args.overrides)
    info = compute_init(cfg.dist)
    try:
        job = setup(cfg, info)
        result = fit(job)
        digest = weights_digest(job.model)
        args.report_dir.mkdir(parents=True, exist_ok=True)
        report = {"rank": info.rank, "world_size": info.world_size, "digest": digest, "steps": result.steps,
                  "loss": result.loss, "checkpoint": str(result.checkpoint)}
        (args.report_dir / f"rank{info.rank}.json").write_text(json.dumps(report))
    finally:
        compute_cleanup()


def weights_digest(model: torch.nn.Module) -> str:
    """Hash of the full (unsharded) weights as this rank sees them (collective under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
