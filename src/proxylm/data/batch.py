"""The unit the packer hands the model: fixed-length rows of ids with everything the loss needs."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T) int64 input ids
    pos: torch.Tensor  # (B, T) int64 positions, restarting at 0 at each packed document
    doc: torch.Tensor  # (B, T) int64 document index within its row; attention never crosses it
    targets: torch.Tensor  # (B, H, T) int64 targets of the H heads (head h predicts t+1+h); IGNORE_INDEX where masked
    weights: torch.Tensor  # (B, H, T) float32 per-head loss weights, summing to 1 over valid heads at each position
    is_raw: torch.Tensor  # (B, T) bool: the main-head target at t is part of a raw view (bytes or its sentinels)
    is_compressed: torch.Tensor  # (B, T) bool: the main-head target at t is part of a compressed view
    raw_bytes: int = 0  # raw document bytes covered by this batch (for raw bytes/s)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        moved = {
            f.name: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return Batch(**moved)
