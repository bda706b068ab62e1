"""Shared pieces of the GPU checks (`make gpu-check`, scripts/gpu_check.py).

Every test here is marked `gpu`: `make test` deselects them, and without CUDA they skip (the one
legitimate skip). With PROXYLM_GPU_DRY_RUN=1 they run on the CPU with tiny shapes instead, which
is how `make test` checks that the prepared script works on a machine without a GPU.

Each test writes its figures (seconds, MFU, largest difference, ...) through `rig.record`; the
driver prints them as one table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

DRY_RUN_ENV = "PROXYLM_GPU_DRY_RUN"
REPORT_ENV = "PROXYLM_GPU_REPORT"


@dataclass(frozen=True)
class Shapes:
    """Sizes of the checks: the real ones on a GPU, tiny ones for the CPU dry run."""

    corpus_limit: int  # stdlib documents prepared for the training checks
    bpe_vocab: int
    model: dict  # model section of the training run (a preset plus overrides)
    seq_len: int
    batch_size: int
    train_steps: int
    log_every: int
    compile: bool
    attention_len: int  # sequence length of the flex-vs-SDPA comparison
    small_model: dict  # ModelConfig fields of the FSDP2, resume and generation checks
    resume_steps: int  # the exact-resume runs stop after half of these and continue
    generate_prompts: int
    generate_bytes: int
    neural_docs: int  # documents of neural_doc_bytes each, from the standard library
    neural_doc_bytes: int


GPU_SHAPES = Shapes(
    corpus_limit=600,
    bpe_vocab=4096,
    # ~92M parameters with the proxy vocabulary (GPT-2 small's shape); flex attention with a BlockMask
    model={"preset": "base", "dim": 768, "n_layers": 12, "n_heads": 12, "attention": "flex", "n_raw_heads": 1},
    seq_len=2048,
    batch_size=16,
    train_steps=300,
    log_every=25,
    compile=True,
    attention_len=2048,
    small_model={"dim": 256, "n_layers": 4, "n_heads": 4, "max_seq_len": 512},
    resume_steps=8,
    generate_prompts=4,
    generate_bytes=64,
    neural_docs=200,
    neural_doc_bytes=4096,
)
DRY_SHAPES = Shapes(
    corpus_limit=30,
    bpe_vocab=300,
    model={"preset": "small", "dim": 32, "n_layers": 2, "n_heads": 2, "attention": "flex", "n_raw_heads": 1},
    seq_len=64,
    batch_size=2,
    train_steps=4,
    log_every=1,
    compile=False,  # compiling takes longer than the whole dry run should
    attention_len=96,
    small_model={"dim": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 128},
    resume_steps=4,
    generate_prompts=2,
    generate_bytes=12,
    neural_docs=3,
    neural_doc_bytes=256,
)


@dataclass(frozen=True)
class Rig:
    device: torch.device
    dry_run: bool
    shapes: Shapes

    def record(self, check: str, **figures) -> None:
        """Add one row of figures to the driver's table (a JSON line in $PROXYLM_GPU_REPORT)."""
        path = os.environ.get(REPORT_ENV)
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps({"check": check, **figures}) + "\n")


@pytest.fixture(scope="session")
def rig() -> Rig:
    dry_run = os.environ.get(DRY_RUN_ENV) == "1"
    if dry_run:
        rig = Rig(torch.device("cpu"), True, DRY_SHAPES)
    elif torch.cuda.is_available():
        rig = Rig(torch.device("cuda", 0), False, GPU_SHAPES)
    else:
        pytest.skip("no CUDA device (the CPU dry run: make gpu-check DRY_RUN=1)")
    name = torch.cuda.get_device_name(rig.device) if rig.device.type == "cuda" else "cpu (dry run)"
    rig.record("device", name=name, torch=torch.__version__, cuda=torch.version.cuda)
    return rig


@pytest.fixture(scope="session")
def shards(rig, tmp_path_factory) -> Path:
    """BPE shards of part of the standard library, prepared once for the training checks."""
    from proxylm.data.prepare import prepare

    out = tmp_path_factory.mktemp("shards") / "stdlib-bpe"
    prepare("stdlib", f"bpe:vocab={rig.shapes.bpe_vocab}", out, limit=rig.shapes.corpus_limit,
            workers=min(8, os.cpu_count() or 1), val_fraction=0.02)
    return out


def train_config(rig: Rig, shards: Path, out: Path, *overrides: str):
    """A proxy-BPE training config (the paper's schedule) at the rig's shapes, on the rig's device."""
    from proxylm.train import load_train_config

    s = rig.shapes
    model = [f"model.{key}={value}" for key, value in s.model.items()]
    # On a GPU the MFU is against the data-sheet peak; the dry run skips measuring a CPU's peak.
    peak = ["run.peak_flops=1.0e+11"] if rig.dry_run else []
    return load_train_config(None, [
        f"data.shards={shards}", f"data.compressor=bpe:vocab={s.bpe_vocab}",
        "schedule.phases=[{mode: translation, order: random, rate_start: 0.4, rate_end: 0.9, fraction: 0.2}, "
        "{mode: sentinel, rate_start: 0.9}]",
        f"pack.seq_len={s.seq_len}", f"pack.batch_size={s.batch_size}", *model,
        "optim.lr=1.0e-3", f"optim.warmup_steps={max(1, s.train_steps // 10)}",
        f"dist.device={rig.device.type}", f"run.out={out}", f"run.max_steps={s.train_steps}",
        f"run.log_every={s.log_every}", f"run.compile={str(s.compile).lower()}", "run.dtype=bf16", "run.plot=false",
        *peak, *overrides,
    ])


def small_model(rig: Rig, **overrides):
    """A small Transformer on the rig's device (fixed seed), for the FSDP2 and generation checks."""
    from proxylm.model import ModelConfig, Transformer

    torch.manual_seed(0)
    return Transformer(ModelConfig(**{**rig.shapes.small_model, **overrides})).to(rig.device)
