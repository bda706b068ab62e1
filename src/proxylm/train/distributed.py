"""Everything about processes and devices, in one place: one command runs on a CPU, one GPU or torchrun.

Design choices:
- `torchrun` is the only launcher: RANK / LOCAL_RANK / WORLD_SIZE in the environment turn
  distribution on (nanoGPT's rule). Backend `auto` is nccl on GPUs and gloo on CPUs.
- `compute_init` returns a small `DistInfo` dataclass, not a tuple (nanochat's common.py, improved).
- `parallelize` applies, in this order: torch.compile, then FSDP2 per block and at the root under
  a MixedPrecisionPolicy (params in bf16, gradients reduced in fp32) — or DDP (torchtitan
  parallelize_llama). Under FSDP2 each block is compiled on its own, which is what its per-block
  all-gathers expect; otherwise the whole model is, so heads and loss fuse as well.
  `Module.compile()` works in place, so state-dict keys stay free of `_orig_mod`. A compile
  that fails stops the run with a CompileError; it never falls back to eager unnoticed.
- With one process the model is returned as it is (no wrapper to unwrap).
- CPU FSDP2 runs shard an initialised model (see trainer.build_model): DTensor's random ops
  are exact for sharded initialisation on GPUs only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from proxylm.errors import UserError
from proxylm.train.config import Backend, DeviceKind, DistConfig, DType, Strategy, TrainConfig


@dataclass(frozen=True)
class DistInfo:
    rank: int  # global rank of this process
    local_rank: int  # rank within this machine (selects the GPU)
    world_size: int  # number of processes
    device: torch.device  # where this process computes
    backend: str | None  # process-group backend, None when running alone

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def compute_init(cfg: DistConfig) -> DistInfo:
    """Pick the device, and join the process group when launched by torchrun with several processes."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    device = _pick_device(cfg.device, local_rank)
    backend = _pick_backend(cfg.backend, device) if world_size > 1 else None
    if world_size > 1 and cfg.strategy is Strategy.NONE:
        raise UserError(f"launched with {world_size} processes but dist.strategy is 'none'; use ddp or fsdp")
    if backend is not None and not dist.is_initialized():
        device_id = device if device.type == "cuda" else None
        dist.init_process_group(backend=backend, device_id=device_id)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device, backend=backend)


def compute_cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def print0(*args: Any, **kwargs: Any) -> None:
    """print on rank 0 only."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, **kwargs)


def barrier(info: DistInfo) -> None:
    if info.is_distributed:
        dist.barrier()


def _pick_device(kind: DeviceKind, local_rank: int) -> torch.device:
    if kind is DeviceKind.AUTO:
        kind = DeviceKind.CUDA if torch.cuda.is_available() else DeviceKind.CPU
    if kind is DeviceKind.CPU:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("dist.device is 'cuda' but torch sees no CUDA device")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _pick_backend(backend: Backend, device: torch.device) -> str:
    if backend is Backend.AUTO:
        return "nccl" if device.type == "cuda" else "gloo"
    if backend is Backend.NCCL and device.type != "cuda":
        raise UserError("dist.backend is 'nccl' but the device is the CPU; use gloo (or auto)")
    return backend.value


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The repeated blocks that FSDP2 shards and compile traces one at a time."""
    for name in ("layers", "blocks", "h"):
        blocks = getattr(model, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise TypeError(f"{type(model).__name__} has no ModuleList of blocks named layers, blocks or h")


def parallelize(model: nn.Module, info: DistInfo, cfg: TrainConfig) -> nn.Module:
    """Compile each block, then shard with FSDP2 or wrap in DDP (per cfg.dist.strategy, when
    several processes run). FSDP2 may be applied on the meta device, before initialisation; DDP
    broadcasts rank 0's weights, so it needs initialised ones."""
    fsdp = uses_fsdp(info, cfg.dist.strategy)
    if cfg.run.compile:
        compile_model(model, per_block=fsdp)
    if not info.is_distributed:
        return model
    if fsdp:
        apply_fsdp(model, cfg.run.dtype)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def compile_model(model: nn.Module, per_block: bool) -> None:
    """torch.compile in place: per block under FSDP2 (its all-gathers run between blocks), else the
    whole model, so the output heads and the loss fuse too (~1.6x on the tiny CPU model).
    A run that asks for compile gets it or stops: TorchDynamo's fallback to eager on errors is
    turned off (a "compiled" figure must never be an eager one), and `compile_failures` turns
    what compile raises at the first step into a UserError naming run.compile."""
    import torch._dynamo

    if torch._dynamo.config.disable:
        raise CompileError("run.compile=true but TorchDynamo is disabled (TORCHDYNAMO_DISABLE is set): "
                           "unset it, or set run.compile=false to train eagerly")
    torch._dynamo.config.suppress_errors = False  # also when TORCHDYNAMO_SUPPRESS_ERRORS asks otherwise
    if per_block:
        for block in transformer_blocks(model):
            block.compile()
    else:
        model.compile()


class CompileError(UserError):
    """torch.compile was asked for and cannot compile this model here."""


@contextlib.contextmanager
def compile_failures(enabled: bool) -> Iterator[None]:
    """Name a torch.compile failure (raised lazily, at the first forward) as a CompileError."""
    from torch._dynamo.exc import TorchDynamoException

    try:
        yield
    except TorchDynamoException as exc:
        if not enabled:
            raise
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CompileError(f"run.compile=true but torch.compile failed: {reason} (TORCHDYNAMO_VERBOSE=1 shows "
                           "where); fix that, or set run.compile=false to train eagerly") from exc


@dataclass(frozen=True)
class CompileStatus:
    """What TorchDynamo compiled in this process so far (its counters): graphs, and breaks between them."""

    graphs: int
    graph_breaks: int

    @classmethod
    def now(cls) -> "CompileStatus":
        from torch._dynamo.utils import counters

        return cls(graphs=counters["stats"]["unique_graphs"], graph_breaks=sum(counters["graph_break"].values()))


def apply_fsdp(model: nn.Module, dtype: DType) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    param_dtype = torch.bfloat16 if dtype is DType.BF16 else None
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    blocks = transformer_blocks(model)
    for i, block in enumerate(blocks):
        # The last block's parameters are needed again at once by backward: keep them gathered.
        fully_shard(block, mp_policy=policy, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mp_policy=policy)


def uses_fsdp(info: DistInfo, strategy: Strategy) -> bool:
    return info.is_distributed and strategy is Strategy.FSDP


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a small metrics tensor over ranks (for logging; gradients are DDP's / FSDP's job)."""
    if info.is_distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order (loader and RNG states for a checkpoint)."""
    if not info.is_distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
