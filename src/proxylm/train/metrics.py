"""Training metrics: one JSON object per logged step in `metrics.jsonl`, and a PNG of the curves.

Design choices:
- JSON lines, appended and flushed per record, so a killed run keeps everything it logged and
  `tail -f` works. On resume, records after the checkpoint's step are dropped (the resumed
  run logs those steps again), so the file always reads as one uninterrupted run.
- Loss is reported three ways: `loss` (the optimised, head-weighted loss), and the main head's
  cross-entropy on raw and on compressed positions (`loss_raw`, `loss_compressed`; NaN-free:
  null when a step saw no position of that view).
- MFU divides achieved training FLOP/s per process by a peak; on CPU the peak is a bf16 matmul
  measured in the same process (`matmul_peak_flops`), so the figure is honest on any machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from proxylm.io import atomic_path, atomic_write_text

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by device-name fragment;
# the first fragment found in the name wins, so longer names come before their prefixes.
GPU_BF16_PEAKS = {
    "H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L40": 181e12,
    "L4": 121e12, "A10G": 125e12, "4090": 165e12,
}

# (axis title, y label, [(record key, curve label), ...]) of the three panels of curves.png
PANELS = (
    ("training loss", "nats / symbol", [("loss", "loss (all heads)"), ("loss_raw", "main head, raw positions"),
                                        ("loss_compressed", "main head, compressed positions")]),
    ("learning rate", "lr", [("lr", "lr")]),
    ("throughput", "per second", [("symbols_per_s", "symbols"), ("raw_bytes_per_s", "raw bytes"),
                                  ("text_bytes_per_s", "text bytes (est.)")]),
)


class MetricsLog:
    """Appends records to `path`; with `resume_step`, first drops records logged after that step."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [r for r in read_metrics(self.path) if r.get("step", -1) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a metrics file (a torn last line from a killed run is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_metrics(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Loss curves (raw and compressed positions apart), learning rate and throughput, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4))
    for ax, (title, ylabel, curves) in zip(axes, PANELS):
        for key, label in curves:
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), label=label)
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        if len(curves) > 1:
            ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def matmul_peak_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16, sizes: tuple[int, ...] = (512, 1024, 2048),
                      seconds: float = 0.6) -> float:
    """Best bf16 matmul FLOP/s this process reaches on `device` over square matmuls of `sizes`
    (a measured peak for MFU; the best of several sizes, since caches shared with other
    processes can slow one size more than another)."""
    best, give_up = 0.0, time.perf_counter() + 4 * seconds
    for size in sizes:
        if time.perf_counter() > give_up:  # a slow dtype on this device: the smaller sizes tell enough
            break
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        a @ b  # warm-up
        deadline = time.perf_counter() + seconds / len(sizes)
        while True:
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(2):
                a @ b
            _synchronize(device)
            best = max(best, 2 * 2 * size**3 / (time.perf_counter() - start))
            if time.perf_counter() >= deadline:
                break
    return best


def device_peak_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> float:
    """The data-sheet bf16 peak for known GPUs, otherwise one measured in `dtype`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, peak in GPU_BF16_PEAKS.items():
            if fragment in name:
                return peak
    return matmul_peak_flops(device, dtype)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
