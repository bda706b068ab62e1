"""Flex attention with a document BlockMask computes what SDPA with the dense mask computes."""

from __future__ import annotations

import warnings

import pytest
import torch

from proxylm.model import AttentionMask, attend, document_causal_mask, flex_block_mask

from .conftest import small_model

pytestmark = pytest.mark.gpu


def random_documents(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(B, T) document ids: runs of random lengths, some a single position long."""
    cuts = torch.rand(batch, length, generator=generator) < 0.02
    cuts[:, 0] = False
    return cuts.cumsum(dim=1)


def flex_functions(rig):
    """Compiled flex on a GPU (what training uses); eager flex on the CPU dry run (compiling is slow)."""
    if rig.device.type == "cuda":
        return None, None  # attend() and flex_block_mask() then use their compiled defaults
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    return flex_attention, create_block_mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flex_document_mask_equals_sdpa(rig, dtype):
    gen = torch.Generator().manual_seed(0)
    B, H, T, hd = 2, 4, rig.shapes.attention_len, 64
    q, k, v = (torch.randn(B, H, T, hd, generator=gen).to(rig.device, dtype) for _ in range(3))
    doc = random_documents(B, T, gen).to(rig.device)
    flex, create_block_mask = flex_functions(rig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex warns that it is slow
        out = attend(q, k, v, AttentionMask(block=flex_block_mask(doc, create_block_mask)), flex=flex)
    dense = attend(q, k, v, AttentionMask(dense=document_causal_mask(doc)))
    diff = (out.float() - dense.float()).abs()
    # bf16: outputs of magnitude 2-4 are 1/64 apart, so two kernels may differ by a step or two
    max_tolerance, mean_tolerance = (1e-3, 1e-5) if dtype is torch.float32 else (6e-2, 5e-3)
    rig.record(f"flex == sdpa ({str(dtype).removeprefix('torch.')})", max_abs_diff=diff.max().item(),
               mean_abs_diff=diff.mean().item(), seq_len=T, documents=int(doc[0, -1]) + 1)
    assert diff.max().item() < max_tolerance and diff.mean().item() < mean_tolerance


def test_flex_model_matches_sdpa_model_in_loss_and_gradients(rig):
    """The whole model: the same weights under both kernels give the same loss and gradients (on a
    GPU the FLEX model takes the BlockMask path; on the CPU it falls back to SDPA)."""
    sdpa = small_model(rig, attention="sdpa")
    flex = small_model(rig, attention="flex")
    flex.load_state_dict(sdpa.state_dict())
    gen = torch.Generator().manual_seed(1)
    T = rig.shapes.small_model["max_seq_len"]
    ids = torch.randint(64, 320, (2, T), generator=gen).to(rig.device)
    doc = random_documents(2, T, gen).to(rig.device)
    targets = ids.roll(-1, dims=1)
    losses = []
    for model in (sdpa, flex):
        loss = model(ids, doc=doc, targets=targets).loss
        loss.backward()
        losses.append(loss.item())
    grad_diff = max((a.grad - b.grad).abs().max().item() for a, b in zip(sdpa.parameters(), flex.parameters()))
    rig.record("flex model == sdpa model", loss_diff=abs(losses[0] - losses[1]), max_grad_diff=grad_diff)
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert grad_diff < 1e-3
