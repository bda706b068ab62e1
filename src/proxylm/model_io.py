"""Model weights on disk: a directory with `model.safetensors` and `model.json`.

    save_model(model, "runs/x/final")            # writes both files atomically, weights first
    model = load_model("runs/x/final", device="cuda")

- `model.json` is {"format": "proxylm-model", "version": 1, "config": <ModelConfig as plain data>}.
  It is written last, so a directory with a model.json has complete weights.
- Tensors that share storage (weights tied by assignment) are stored once; the other names are kept
  in the safetensors metadata under "proxylm.aliases" and restored on load. Ties built into the model
  (`tie_embeddings`) have a single name and need nothing.
- Loading builds the model on the meta device and assigns the stored tensors (no second copy, no
  random init), keeping their stored dtype. Every mismatch is a UserError naming the file and tensor.
- Full training checkpoints (optimizer, data state) are built on top of these by the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from proxylm.config import ConfigError, from_dict, to_dict
from proxylm.errors import UserError
from proxylm.io import atomic_path, atomic_write_json
from proxylm.model import ModelConfig, Transformer

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
FORMAT = "proxylm-model"
VERSION = 1
_ALIASES_KEY = "proxylm.aliases"


class CheckpointError(UserError):
    """A model directory that cannot be read; the message names the file and the problem."""


def save_model(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write `model.safetensors` and `model.json` into `directory` (created if needed); return it."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper holds the module here
    directory = Path(directory)
    tensors, aliases = _dedup_shared(model.state_dict())
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", _ALIASES_KEY: json.dumps(aliases)})
    atomic_write_json(directory / CONFIG_FILE, {"format": FORMAT, "version": VERSION, "config": to_dict(model.cfg)})
    return directory


def _dedup_shared(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU tensors, one name per shared storage, and {alias: stored name} for the rest."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().to("cpu").contiguous()
    return tensors, aliases


def load_model_config(directory: str | Path) -> ModelConfig:
    """The ModelConfig stored in a model directory (or in the model.json path given)."""
    path = _config_path(directory)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a proxylm model file (format {found!r}, expected {FORMAT!r})")
    if not isinstance(data.get("version"), int) or data["version"] > VERSION:
        version = data.get("version")
        raise CheckpointError(f"{path}: model format version {version!r}; this proxylm reads up to {VERSION}")
    try:
        return from_dict(ModelConfig, data.get("config"), prefix="config.")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _config_path(directory: str | Path) -> Path:
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"model checkpoint not found: {directory}")
    if directory.is_file():
        if directory.name != CONFIG_FILE:
            raise CheckpointError(f"{directory}: expected a model directory or its {CONFIG_FILE}")
        return directory
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a proxylm model checkpoint: it has no {CONFIG_FILE}")
    return path


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Build the Transformer described by `model.json` and load `model.safetensors` onto `device`."""
    cfg = load_model_config(directory)
    weights = _config_path(directory).parent / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights.parent}: {CONFIG_FILE} is there but {WEIGHTS_FILE} is missing")
    state = _read_weights(weights, device)
    with torch.device("meta"):
        model = Transformer(cfg)
    _check_state(model, state, weights)
    model.load_state_dict(state, assign=True)
    return model


def _read_weights(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        state = load_file(str(path), device=str(device))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    for alias, name in json.loads(metadata.get(_ALIASES_KEY, "{}")).items():
        state[alias] = state[name]
    return state


def _check_state(model: Transformer, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = [name for name in expected if name not in state]
    if missing:
        raise CheckpointError(f"{path}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
    unexpected = [name for name in state if name not in expected]
    if unexpected:
        raise CheckpointError(f"{path}: tensor {unexpected[0]!r} is not part of the model in {CONFIG_FILE}")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {tuple(state[name].shape)} "
                f"but the config in {CONFIG_FILE} needs {tuple(tensor.shape)}"
            )
