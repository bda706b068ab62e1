"""Training checkpoints: full model weights, optimiser, data and RNG state, written atomically.

    CKPT_DIR/latest                         name of the newest complete checkpoint (atomic pointer)
    CKPT_DIR/step-00000100/model.safetensors   weights, plain full state dict (proxylm.model_io)
    CKPT_DIR/step-00000100/model.json          ModelConfig: `load_model(CKPT)` works on any checkpoint
    CKPT_DIR/step-00000100/data.json           shards, manifest and compressor config: what evaluation needs
    CKPT_DIR/step-00000100/train_state.pt      optimiser, step, counters, per-rank loader and RNG state, config

Design choices:
- A checkpoint is written into a hidden temporary directory and renamed into place; `latest` is
  updated after the rename, and only then are old checkpoints pruned. A reader sees complete
  checkpoints only, whatever moment the writer is killed at.
- Weights and optimiser state are gathered as full, unsharded state dicts with the
  torch.distributed.checkpoint state-dict helpers (FQN keys, `full_state_dict=True`), so DDP,
  FSDP2 and single-process runs write the same files, and rank 0 alone holds the full copy.
- Each rank reads its own documents and draws its own randomness, so loader and RNG states are
  kept per rank; resumption needs the same number of processes (checked, with a clear error).
- train_state.pt loads with `weights_only=True`: only tensors and plain data are stored.
- A resumed run restores everything before its first step, and refuses a checkpoint whose model
  shape or world size differs from the config's, naming the difference.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from proxylm.config import to_dict
from proxylm.errors import UserError
from proxylm.io import atomic_write_json, atomic_write_text
from proxylm.model import ModelConfig, Transformer
from proxylm.model_io import load_model_config, save_model
from proxylm.train.distributed import DistInfo, all_gather_objects, barrier

LATEST = "latest"
TRAIN_STATE = "train_state.pt"
DATA_INFO = "data.json"
STATE_FORMAT = "proxylm-train-state"
STATE_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_TEMP_PREFIX = ".tmp-"


class CheckpointMismatchError(UserError):
    """A checkpoint that does not fit this run (another model shape or world size)."""


@dataclass
class Counters:
    """What a run has done so far; saved with every checkpoint."""

    step: int = 0  # optimiser steps completed
    flops: float = 0.0  # training FLOPs, all processes
    symbols: int = 0  # non-pad positions trained on, all processes
    raw_bytes: int = 0  # raw document bytes covered, all processes
    train_time_s: float = 0.0  # wall time spent in training steps
    max_position: int = 0  # the longest attention span trained on so far (positions, this process's rows)


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


# ---- files (rank 0) ----------------------------------------------------------------------------


def write_checkpoint(
    ckpt_dir: Path, step: int, model_cfg: ModelConfig, model_state: dict[str, torch.Tensor],
    train_state: dict[str, Any], data_info: dict[str, Any], keep: int,
) -> Path:
    """Write one checkpoint atomically, point `latest` at it and prune to the newest `keep`."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / step_dir_name(step)
    tmp = ckpt_dir / f"{_TEMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(_shell_model(model_cfg, model_state), tmp)
    atomic_write_json(tmp / DATA_INFO, data_info)
    torch.save(train_state, tmp / TRAIN_STATE)
    if final.exists():  # left by a run that was killed before moving `latest` past it
        shutil.rmtree(final)
    os.rename(tmp, final)
    atomic_write_text(ckpt_dir / LATEST, final.name + "\n")
    prune(ckpt_dir, keep)
    return final


def _shell_model(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> Transformer:
    """A Transformer holding `state` without copying it, for `save_model`."""
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(state, assign=True)
    return model


def prune(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints, and temporary directories of killed writers."""
    steps = sorted(_step_dirs(ckpt_dir))
    for step in steps[:-keep]:
        shutil.rmtree(ckpt_dir / step_dir_name(step), ignore_errors=True)
    for tmp in ckpt_dir.glob(f"{_TEMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _step_dirs(ckpt_dir: Path) -> list[int]:
    if not ckpt_dir.is_dir():
        return []
    return [int(m.group(1)) for p in ckpt_dir.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The checkpoint `latest` names, else the highest-step complete one, else None."""
    ckpt_dir = Path(ckpt_dir)
    pointer = ckpt_dir / LATEST
    if pointer.is_file():
        path = ckpt_dir / pointer.read_text().strip()
        if (path / TRAIN_STATE).is_file():
            return path
    steps = sorted(_step_dirs(ckpt_dir))
    return ckpt_dir / step_dir_name(steps[-1]) if steps else None


def read_train_state(path: Path) -> dict[str, Any]:
    file = path / TRAIN_STATE
    if not file.is_file():
        raise CheckpointMismatchError(f"{path}: not a training checkpoint (no {TRAIN_STATE})")
    # mmap: ranks that only need their loader state do not read the optimiser state into memory
    state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise CheckpointMismatchError(f"{file}: format {state.get('format')!r} version {state.get('version')!r}, "
                                      f"expected {STATE_FORMAT!r} version {STATE_VERSION}")
    return state


def check_compatible(path: Path, model_cfg: ModelConfig, world_size: int, state: dict[str, Any]) -> None:
    """Raise CheckpointMismatchError if the checkpoint cannot continue this run."""
    saved = to_dict(load_model_config(path))
    wanted = to_dict(model_cfg)
    differences = [f"{key}={saved.get(key)!r} (config: {wanted[key]!r})" for key in wanted if saved.get(key) != wanted[key]]
    if differences:
        raise CheckpointMismatchError(f"{path} holds another model shape: {', '.join(differences)}")
    if state["world_size"] != world_size:
        raise CheckpointMismatchError(
            f"{path} was written by {state['world_size']} processes; resume it with the same number (this run has {world_size})"
        )


# ---- state of the running job (collective: every rank calls these) -----------------------------


def _state_options(info: DistInfo, load: bool = False):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    if load:
        return StateDictOptions(full_state_dict=True, broadcast_from_rank0=info.is_distributed)
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def save(
    ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, loader, counters: Counters,
    model_cfg: ModelConfig, config: Any, data_info: dict[str, Any], keep: int, info: DistInfo,
) -> Path:
    """Gather the full state on rank 0 and write a checkpoint there; every rank returns its path."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    options = _state_options(info)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options)
    ranks = all_gather_objects({"loader": loader.state_dict(), "rng": rng_state()}, info)
    path = ckpt_dir / step_dir_name(counters.step)
    if info.is_main:
        train_state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "counters": vars(counters).copy(),
            "world_size": info.world_size,
            "optimizer": optim_state,
            "ranks": ranks,
            "config": to_dict(config),
        }
        write_checkpoint(ckpt_dir, counters.step, model_cfg, model_state, train_state, data_info, keep)
    barrier(info)
    return path


def restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, loader, state: dict[str, Any], info: DistInfo) -> Counters:
    """Load weights, optimiser, this rank's loader and RNG state from a checkpoint; return its counters."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    options = _state_options(info, load=True)
    # With broadcast_from_rank0 only rank 0 reads the files; the others receive their shards.
    reads = info.is_main or not info.is_distributed
    model_state = load_file(str(path / "model.safetensors")) if reads else {}
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, optimizer, state["optimizer"] if reads else {}, options=options)
    own = state["ranks"][info.rank]
    loader.load_state_dict(own["loader"])
    set_rng_state(own["rng"])
    return Counters(**state["counters"])


def rng_state() -> dict[str, Any]:
    """Every generator a step may draw from, as tensors and plain data (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants nested tuples; a round trip through some serialisers gives lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def data_info(shards, split: str, vocab_size: int) -> dict[str, Any]:
    """What evaluation needs to know about the data a checkpoint was trained on."""
    directory = Path(shards.directory).resolve()
    return {
        "shards": str(directory),
        "manifest": str(directory / "manifest.json"),
        "split": split,
        "compressor": shards.manifest["compressor"],
        "alphabet_size": shards.alphabet_size,
        "vocab_size": vocab_size,
    }


def read_data_info(path: str | Path) -> dict[str, Any]:
    """The data.json of a checkpoint directory."""
    return json.loads((Path(path) / DATA_INFO).read_text())
