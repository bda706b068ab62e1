"""Neural prepare on a GPU machine: the neural proxy's coder runs its byte LM on the CPU (bit-exact
frequency tables need fixed CPU kernels, proxylm.compress.byte_model), so this checks that a CUDA
build of torch changes nothing: prepare works, and every window decodes back exactly."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from proxylm import compress
from proxylm.data.corpus import open_corpus
from proxylm.data.prepare import prepare

pytestmark = pytest.mark.gpu


def stdlib_heads(path, docs: int, size: int):
    """The first `size` bytes of `docs` standard-library modules, as JSONL."""
    with open(path, "w") as fh:
        for doc in open_corpus("stdlib", limit=docs):
            fh.write(json.dumps({"text": doc.data[:size].decode("utf-8", "ignore")}) + "\n")
    return path


def test_neural_prepare_round_trips_on_a_gpu_machine(rig, transformer_dir, tmp_path):  # transformer_dir: tests/conftest.py
    spec = f"neural:model={transformer_dir},window_bits=16"
    workers = 1 if rig.dry_run else min(4, os.cpu_count() or 1)  # a worker costs a process start
    corpus = stdlib_heads(tmp_path / "docs.jsonl", rig.shapes.neural_docs, rig.shapes.neural_doc_bytes)
    manifest = prepare(corpus, spec, tmp_path / "shards", workers=workers)
    compressor = compress.build(spec)
    for doc in open_corpus(corpus, limit=2):
        data = doc.data
        symbols, side = compressor.encode_with_side(data)
        assert isinstance(symbols, np.ndarray) and compressor.decode(symbols, side) == data
    rig.record("neural prepare", documents=manifest["documents"], raw_mb=manifest["raw_bytes"] / 1e6,
               ratio=manifest["ratio"], mb_per_s=manifest["run"]["bytes_per_s"] / 1e6, workers=workers,
               cuda_available=torch.cuda.is_available())
    assert manifest["documents"] == rig.shapes.neural_docs and manifest["ratio"] > 1
