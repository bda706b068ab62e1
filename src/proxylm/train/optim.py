"""AdamW with the reference's parameter groups, and the learning-rate schedule.

Design choices (DESIGN.md section 5):
- AdamW (0.9, 0.95), eps 1e-15, weight decay 0.1 on matrices only: embeddings, output heads
  tied to them, norms and biases (every parameter with fewer than two dimensions, plus any
  `nn.Embedding`) get no decay, as in nanoGPT/nanochat.
- Linear warm-up to the peak, then a cosine down to a floor of 10% of the peak. The cosine runs
  over the planned number of steps, so a run stopped by FLOPs or steps ends at the floor.
- The schedule is a pure function of the step: nothing to save beyond the step itself.
- A control run can follow another run's schedule (optim.follow_steps, follow_map): the study's
  raw-only arm trains each document at the lr the proxy run gave it.
- The fused AdamW kernel is used where torch has one for the device (CPU and CUDA in torch 2.4+).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from proxylm.train.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed matrices, and undecayed embeddings, norms and biases."""
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or id(param) in embedding_params:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay)
    device_type = next(model.parameters()).device.type
    # fused needs every parameter as a plain tensor on a supported device; FSDP2 DTensors are fine.
    fused = device_type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimiser step `step` (0-based) of a run planned for `total_steps` steps,
    or, with `cfg.follow_steps`, of the run it follows (at the step `cfg.follow_map` maps it to)."""
    if cfg.follow_steps is not None:
        return schedule_lr(followed_step(step, cfg.follow_map), cfg.follow_steps, cfg)
    return schedule_lr(step, total_steps, cfg)


def followed_step(step: int, knots: list[list[int]] | None) -> int:
    """`step` mapped through piecewise-linear knots (held flat beyond the last); identity without knots."""
    if not knots:
        return step
    if step <= knots[0][0]:
        return knots[0][1]
    for (s0, f0), (s1, f1) in zip(knots, knots[1:]):
        if step <= s1:
            return round(f0 + (f1 - f0) * (step - s0) / (s1 - s0))
    return knots[-1][1]


def schedule_lr(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Linear warm-up, then the cosine down to the floor, over `total_steps` steps."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_steps = max(total_steps - warmup - 1, 1)
    progress = min((step - warmup) / decay_steps, 1.0)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
