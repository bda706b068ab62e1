"""Two gloo processes under torchrun: DDP and FSDP2 ranks agree, checkpoints are full, resume is exact, and
2 DDP ranks train like 1 process accumulating the same global batch."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from proxylm.data.prepare import prepare
from proxylm.model_io import load_model
from proxylm.train import load_train_config, train
from proxylm.train.checkpoint import CheckpointMismatchError
from proxylm.train.metrics import read_metrics

HERE = Path(__file__).parent
REPO = HERE.parent


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    stdlib = Path(os.__file__).parent
    corpus = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    with corpus.open("w") as fh:
        for source in sorted(stdlib.glob("*.py"))[:30]:
            fh.write(json.dumps({"text": source.read_text(errors="replace")[:2000]}) + "\n")
    out = tmp_path_factory.mktemp("shards") / "gzip"
    prepare(corpus, "gzip", out, val_fraction=0.05)
    return out


def overrides(shards, out, strategy, steps):
    return [
        f"data.shards={shards}", "data.compressor=gzip", "schedule.phases=[{mode: sentinel, rate_start: 0.5}]",
        "pack.seq_len=64", "pack.batch_size=2", "model.preset=small", "model.dim=32", "model.n_layers=2",
        "model.n_heads=2", "model.n_raw_heads=1", "optim.warmup_steps=1", f"run.max_steps={steps}", "run.log_every=1",
        "run.peak_flops=1e11", "run.plot=false", f"run.out={out}", f"dist.strategy={strategy}", "dist.backend=gloo",
    ]


def torchrun(report_dir, args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(HERE / "run_train.py"), str(report_dir), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((report_dir / f"rank{r}.json").read_text()) for r in range(2)]


def digest(state):
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().float().numpy().tobytes())
    return h.hexdigest()


def resume_from_step_2(tmp_path, shards, run, strategy):
    """Continue `run`'s step-2 checkpoint in a fresh folder up to step 4; returns its folder and reports."""
    again = tmp_path / f"{strategy}-again"
    shutil.copytree(run / "checkpoints" / "step-00000002", again / "checkpoints" / "step-00000002")
    return again, torchrun(tmp_path / f"{strategy}-report2", [*overrides(shards, again, strategy, 4), "ckpt.resume=true"])


def step_losses(run):
    return [(r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(run / "metrics.jsonl")]


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def two_process_run(request, shards, tmp_path_factory):
    """Four steps on two processes with checkpoints at 2 and 4: (strategy, run folder, rank reports)."""
    strategy = request.param
    base = tmp_path_factory.mktemp(strategy)
    ranks = torchrun(base / "report", [*overrides(shards, base / "run", strategy, 4), "ckpt.every=2"])
    return strategy, base / "run", ranks


def test_ranks_agree_and_resume_exactly(tmp_path, shards, two_process_run):
    strategy, run, ranks = two_process_run
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["digest"] == ranks[1]["digest"] and ranks[0]["loss"] == ranks[1]["loss"]
    # The checkpoint holds the full weights as a plain state dict, whatever the strategy.
    assert digest(load_model(run / "checkpoints" / "step-00000004").state_dict()) == ranks[0]["digest"]
    losses = step_losses(run)
    assert [step for step, _, _ in losses] == [1, 2, 3, 4] and all(0 < loss < 7 for _, loss, _ in losses)

    again, resumed = resume_from_step_2(tmp_path, shards, run, strategy)
    assert resumed[0]["digest"] == resumed[1]["digest"] == ranks[0]["digest"]
    assert step_losses(again) == losses[2:]


def test_resume_needs_the_same_number_of_processes(tmp_path, shards, two_process_run):
    strategy, run, _ = two_process_run
    resume = [*overrides(shards, tmp_path / "one", strategy, 6), f"ckpt.dir={run / 'checkpoints'}", "ckpt.resume=true"]
    with pytest.raises(CheckpointMismatchError, match="written by 2 processes; resume it with the same number"):
        train(load_train_config(None, resume))


@pytest.mark.usefixtures("one_thread")
def test_two_ddp_processes_train_like_one_process_with_the_same_global_batch(tmp_path, shards):
    """2 ranks x batch 2 x accumulation 1 against 1 rank x batch 2 x accumulation 2, in fp32: micro-batch
    m = accum_index * world_size + rank holds the same rows in both, so every step's loss (the global
    mean over micro-batches), gradient norm and the final weights agree up to float summation order."""
    fp32 = ["run.dtype=fp32", "pack.batch_size=2"]
    ranks = torchrun(tmp_path / "report", [*overrides(shards, tmp_path / "two", "ddp", 4), *fp32, "run.grad_accum=1"])
    one = train(load_train_config(None, [*overrides(shards, tmp_path / "one", "none", 4), *fp32, "run.grad_accum=2"]))
    assert ranks[0]["digest"] == ranks[1]["digest"] and ranks[0]["loss"] == ranks[1]["loss"]  # one global figure
    two_steps, one_steps = step_losses(tmp_path / "two"), step_losses(one.run_dir)
    assert [s for s, _, _ in two_steps] == [s for s, _, _ in one_steps] == [1, 2, 3, 4]
    for (step, loss, grad_norm), (_, loss_one, grad_norm_one) in zip(two_steps, one_steps):
        assert loss == pytest.approx(loss_one, rel=1e-5), f"step {step}: loss"
        assert grad_norm == pytest.approx(grad_norm_one, rel=1e-5), f"step {step}: grad_norm"
    two_weights = load_model(tmp_path / "two" / "checkpoints" / "step-00000004").state_dict()
    one_weights = load_model(one.checkpoint).state_dict()
    assert two_weights.keys() == one_weights.keys()
    for name, weight in one_weights.items():
        torch.testing.assert_close(two_weights[name], weight, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
