"""AdamW parameter groups and the warm-up + cosine + floor learning-rate schedule."""

import math

import pytest
import torch

from proxylm.model import Transformer, model_preset
from proxylm.train.config import OptimConfig
from proxylm.train.optim import build_optimizer, lr_at, param_groups


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(model_preset("small", 400, dim=32, n_layers=2, n_heads=2, n_raw_heads=1))


def test_no_weight_decay_on_embeddings_and_norms(model):
    decay, no_decay = param_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "tok_embeddings.weight" in undecayed
    assert all("norm" in n for n in undecayed - {"tok_embeddings.weight"})
    assert any(n.endswith("norm.weight") for n in undecayed)
    assert "layers.0.attention.wq.weight" in decayed and "layers.0.feed_forward.w2.weight" in decayed
    assert decayed | undecayed == set(names.values()) and not decayed & undecayed


def test_optimizer_uses_the_config(model):
    cfg = OptimConfig(lr=3e-4, beta1=0.8, beta2=0.9, eps=1e-12, weight_decay=0.05)
    opt = build_optimizer(model, cfg)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all(g["betas"] == (0.8, 0.9) and g["eps"] == 1e-12 and g["lr"] == 3e-4 for g in opt.param_groups)


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(step, 100, cfg) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3)  # the peak is reached on the last warm-up step
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-4)  # 10% floor at the last planned step
    assert min(lrs) >= 1e-4 - 1e-12
    middle = 10 + (99 - 10) // 2
    assert lrs[middle] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * (middle - 10) / 89)))


def test_schedule_fits_runs_shorter_than_the_warmup():
    cfg = OptimConfig(lr=1e-3, warmup_steps=500)
    lrs = [lr_at(step, 5, cfg) for step in range(5)]
    assert lrs[3] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-3)  # warm-up squeezed to 4 steps
    assert lr_at(0, 1, cfg) == pytest.approx(1e-3)
    assert lr_at(1000, 100, cfg) == pytest.approx(1e-4)  # past the plan: stays at the floor


def test_a_run_can_follow_another_runs_schedule_through_a_step_map():
    own = OptimConfig(lr=1e-3, warmup_steps=10)
    followed = [lr_at(step, 100, own) for step in range(100)]
    same_steps = OptimConfig(lr=1e-3, warmup_steps=10, follow_steps=100)
    assert [lr_at(step, 30, same_steps) for step in range(100)] == followed  # its own plan (30) is ignored
    mapped = OptimConfig(lr=1e-3, warmup_steps=10, follow_steps=100, follow_map=[[0, 0], [10, 40], [20, 99]])
    lrs = [lr_at(step, 21, mapped) for step in range(25)]
    assert lrs[0] == followed[0] and lrs[10] == followed[40] and lrs[15] == followed[70] and lrs[20] == followed[99]
    assert lrs[5] == followed[20] and lrs[24] == followed[99]  # linear between knots, flat past the last


@pytest.mark.parametrize("bad, message", [
    (["optim.follow_map=[[0, 0]]"], "needs optim.follow_steps"),
    (["optim.follow_steps=10", "optim.follow_map=[[0, 0], [0, 3]]"], "steps must increase"),
    (["optim.follow_steps=10", "optim.follow_map=[[0, 5], [2, 3]]"], "must not decrease"),
    (["optim.follow_steps=10", "optim.follow_map=[[0, 5, 1]]"], "pairs"),
])
def test_bad_step_maps_are_refused(bad, message):
    from proxylm.config import ConfigError
    from proxylm.train.config import load_train_config

    with pytest.raises(ConfigError, match=message):
        load_train_config(None, ["data.shards=x", *bad])


@pytest.mark.parametrize("bad", ["optim.lr=0", "optim.beta2=1.5", "optim.warmup_steps=-1", "optim.min_lr_ratio=2"])
def test_bad_optimiser_values_are_refused(bad):
    from proxylm.config import ConfigError
    from proxylm.train.config import load_train_config

    with pytest.raises(ConfigError, match=bad.split("=")[0].split(".")[1]):
        load_train_config(None, ["data.shards=x", bad])
