"""A compiled bf16 training run of a ~100M-parameter proxy model: it learns, and its MFU is
measured against the data-sheet peak of the GPU (proxylm.train.metrics.GPU_BF16_PEAKS)."""

from __future__ import annotations

import math

import pytest

from proxylm.train import train
from proxylm.train.metrics import read_metrics

from .conftest import train_config

pytestmark = pytest.mark.gpu


def test_compiled_bf16_run_learns_and_reports_mfu(rig, shards, tmp_path):
    from proxylm.model_io import load_model

    result = train(train_config(rig, shards, tmp_path / "run"))
    records = read_metrics(result.metrics)
    losses = [r["loss"] for r in records]
    steady = records[1:] or records  # the first window holds the compilation
    mfu = sum(r["mfu"] for r in steady) / len(steady)
    symbols_per_s = sum(r["symbols_per_s"] for r in steady) / len(steady)
    params = load_model(result.checkpoint).num_params()
    rig.record("compiled bf16 training", params_m=params / 1e6, steps=result.steps, first_loss=losses[0],
               last_loss=losses[-1], symbols_per_s=symbols_per_s, mfu=mfu, seconds=result.train_time_s)
    assert result.steps == rig.shapes.train_steps
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    assert 0 < mfu < 1
