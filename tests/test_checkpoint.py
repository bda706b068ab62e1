"""Checkpoints: atomic directories, the `latest` pointer, pruning, shape checks, exact state round trips."""

import io
import random

import numpy as np
import pytest
import torch

from proxylm.model import Transformer, model_preset
from proxylm.model_io import load_model
from proxylm.train import checkpoint
from proxylm.train.checkpoint import CheckpointMismatchError, Counters
from proxylm.train.distributed import DistInfo
from proxylm.train.config import OptimConfig
from proxylm.train.optim import build_optimizer

SOLO = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)


class FakeLoader:
    def __init__(self, position=0):
        self.position = position

    def state_dict(self):
        return {"position": self.position, "stream": torch.arange(self.position)}

    def load_state_dict(self, state):
        self.position = state["position"]


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = model_preset("small", 400, **{"dim": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 16, **overrides})
    return Transformer(cfg)


def take_a_step(model, optimizer):
    ids = torch.randint(0, 400, (2, 16))
    model(ids, targets=torch.roll(ids, -1, dims=1)).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def save(ckpt_dir, model, optimizer, step, keep=2, loader=None):
    return checkpoint.save(
        ckpt_dir, model, optimizer, loader or FakeLoader(step), Counters(step=step, flops=1e9 * step), model.cfg,
        {"run": "test"}, {"shards": "nowhere"}, keep, SOLO,
    )


def test_save_then_restore_continues_exactly(tmp_path):
    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig())
    take_a_step(model, optimizer)
    torch.manual_seed(123)
    path = save(tmp_path, model, optimizer, step=1)
    expected_draw = torch.rand(3)
    take_a_step(model, optimizer)  # the uninterrupted run goes on
    continued = {k: v.clone() for k, v in model.state_dict().items()}

    other = tiny_model(seed=1)
    other_optimizer = build_optimizer(other, OptimConfig())
    loader = FakeLoader()
    state = checkpoint.read_train_state(path)
    counters = checkpoint.restore(path, other, other_optimizer, loader, state, SOLO)
    assert counters == Counters(step=1, flops=1e9)
    assert loader.position == 1
    assert torch.equal(torch.rand(3), expected_draw)  # torch's generator was restored too
    take_a_step(other, other_optimizer)
    assert all(torch.equal(continued[k], v) for k, v in other.state_dict().items())


def test_checkpoint_is_a_loadable_model_with_data_info(tmp_path):
    model = tiny_model(n_raw_heads=1)
    path = save(tmp_path, model, build_optimizer(model, OptimConfig()), step=7)
    loaded = load_model(path)
    assert loaded.cfg == model.cfg
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())
    assert checkpoint.read_data_info(path) == {"shards": "nowhere"}
    assert checkpoint.read_train_state(path)["config"] == {"run": "test"}


def test_latest_pointer_and_pruning(tmp_path):
    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig())
    (tmp_path / ".tmp-step-00000009-999").mkdir(parents=True)  # left by a writer killed mid-way
    for step in (10, 20, 30):
        save(tmp_path, model, optimizer, step=step, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000020", "step-00000030"]
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / "step-00000030"
    (tmp_path / "latest").unlink()  # without the pointer, the highest complete step
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / "step-00000030"
    assert checkpoint.latest_checkpoint(tmp_path / "missing") is None


def test_another_shape_or_world_size_is_refused(tmp_path):
    model = tiny_model()
    path = save(tmp_path, model, build_optimizer(model, OptimConfig()), step=1)
    state = checkpoint.read_train_state(path)
    checkpoint.check_compatible(path, model.cfg, 1, state)
    wider = model_preset("small", 400, dim=64, n_layers=2, n_heads=2, max_seq_len=16)
    with pytest.raises(CheckpointMismatchError, match=r"another model shape: dim=32 \(config: 64\)"):
        checkpoint.check_compatible(path, wider, 1, state)
    with pytest.raises(CheckpointMismatchError, match="written by 1 processes.*this run has 2"):
        checkpoint.check_compatible(path, model.cfg, 2, state)
    with pytest.raises(CheckpointMismatchError, match="not a training checkpoint"):
        checkpoint.read_train_state(tmp_path)


def test_rng_state_survives_a_weights_only_round_trip():
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    buffer = io.BytesIO()
    torch.save(checkpoint.rng_state(), buffer)
    draws = (torch.rand(2), np.random.rand(2), random.random())
    buffer.seek(0)
    checkpoint.set_rng_state(torch.load(buffer, weights_only=True))
    again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]
