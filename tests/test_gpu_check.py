"""`make gpu-check` without a GPU: its dry run drives the GPU checks on the CPU with tiny shapes and
prints their table; without the dry run and without CUDA every GPU check skips, and the driver
says so and fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from proxylm.train.metrics import device_peak_flops

REPO = Path(__file__).resolve().parent.parent
CHECKS = ["flex == sdpa (float32)", "flex == sdpa (bfloat16)", "flex model == sdpa model", "compiled bf16 training",
          "fsdp2, one device", "exact resume", "generation (greedy, KV cache)", "speculative == greedy", "neural prepare"]


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("DRY_RUN", None)
    return subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_dry_run_runs_every_check_on_the_cpu_and_prints_one_table():
    done = gpu_check("--dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "gpu-check (dry run: CPU, tiny shapes): cpu (dry run)" in out
    assert "9 of 9 checks passed" in out
    for check in CHECKS:
        assert f"  {check}" in out, check
    assert "mfu" in out and "max_abs_diff" in out


def test_without_cuda_the_checks_skip_and_the_driver_fails():
    done = gpu_check("--no-install", "-k", "flex_document_mask")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "gpu-check: no CUDA device" in done.stdout
    assert re.search(r"skipped\s+0\.0\s+no CUDA device", done.stdout) and "0 of 2 checks passed" in done.stdout


@pytest.mark.parametrize("name, peak", [("NVIDIA H200", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                        ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                        ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12)])
def test_mfu_uses_the_data_sheet_peak_of_the_named_gpu(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert device_peak_flops(torch.device("cuda", 0)) == peak
