"""FSDP2 on one GPU: a fully_shard-ed model (proxylm.train.distributed.apply_fsdp, a one-process
group) trains like the plain model under bf16 autocast."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist

from proxylm.train.config import DType
from proxylm.train.distributed import apply_fsdp

from .conftest import small_model

pytestmark = pytest.mark.gpu
STEPS = 4


@pytest.fixture
def process_group(rig, tmp_path):
    backend = "nccl" if rig.device.type == "cuda" else "gloo"
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group(backend, store=store, rank=0, world_size=1,
                            device_id=rig.device if rig.device.type == "cuda" else None)
    yield
    dist.destroy_process_group()


def train_steps(model, batches, autocast: bool) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for ids, doc in batches:
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = model(ids, doc=doc, targets=ids.roll(-1, dims=1)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_fsdp2_on_one_device_trains_like_the_plain_model(rig, process_group):
    from torch.distributed.tensor import DTensor

    plain = small_model(rig)
    sharded = copy.deepcopy(plain)
    apply_fsdp(sharded, DType.BF16)
    assert all(isinstance(p, DTensor) for p in sharded.parameters())
    gen = torch.Generator().manual_seed(0)
    T = rig.shapes.small_model["max_seq_len"]
    batches = [(torch.randint(64, 320, (2, T), generator=gen).to(rig.device),
                (torch.arange(T) // (T // 4)).expand(2, T).to(rig.device)) for _ in range(STEPS)]
    reference = train_steps(plain, batches, autocast=True)
    losses = train_steps(sharded, batches, autocast=False)  # the MixedPrecisionPolicy casts instead
    full = {k: v.full_tensor() for k, v in sharded.state_dict().items()}
    weight_diff = max((full[k] - v).abs().max().item() for k, v in plain.state_dict().items())
    rig.record("fsdp2, one device", loss_diff=max(abs(a - b) for a, b in zip(losses, reference)),
               max_weight_diff=weight_diff)
    assert losses == pytest.approx(reference, rel=2e-2)
    assert losses[-1] < losses[0]
    assert weight_diff < 1e-2
