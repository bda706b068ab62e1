"""Exact resumption on the device: a run stopped right after a checkpoint and resumed logs the same
losses, step for step, and ends with the same weights as an uninterrupted run (deterministic
kernels; the driver sets CUBLAS_WORKSPACE_CONFIG)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from proxylm.train import checkpoint, train
from proxylm.train.metrics import read_metrics

from .conftest import train_config

pytestmark = pytest.mark.gpu
KEYS = ("step", "loss", "loss_raw", "loss_compressed", "lr", "grad_norm")


class Crash(Exception):
    pass


@pytest.fixture
def deterministic():
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


def losses(run_dir):
    return [tuple(r[k] for k in KEYS) for r in read_metrics(run_dir / "metrics.jsonl")]


def test_a_stopped_run_resumes_exactly(rig, shards, tmp_path, monkeypatch, deterministic):
    small = [f"model.{k}={v}" for k, v in rig.shapes.small_model.items() if k != "max_seq_len"]
    total = rig.shapes.resume_steps
    steps = [f"run.max_steps={total}", f"ckpt.every={total // 2}", "run.log_every=1", "run.compile=false",
             "model.preset=small", "model.attention=sdpa", *small]
    reference = train(train_config(rig, shards, tmp_path / "reference", *steps))

    write = checkpoint.write_checkpoint

    def write_then_crash(ckpt_dir, step, *rest, **kwargs):
        path = write(ckpt_dir, step, *rest, **kwargs)
        if step == total // 2:
            raise Crash
        return path

    monkeypatch.setattr(checkpoint, "write_checkpoint", write_then_crash)
    with pytest.raises(Crash):
        train(train_config(rig, shards, tmp_path / "resumed", *steps))
    monkeypatch.setattr(checkpoint, "write_checkpoint", write)
    resumed = train(train_config(rig, shards, tmp_path / "resumed", *steps, "ckpt.resume=true"))

    weights, expected = load_file(resumed.checkpoint / "model.safetensors"), load_file(reference.checkpoint / "model.safetensors")
    equal = all(torch.equal(weights[k], expected[k]) for k in expected)
    rig.record("exact resume", steps=resumed.steps, losses_equal=losses(tmp_path / "resumed") == losses(tmp_path / "reference"),
               weights_equal=equal)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "reference")
    assert equal
