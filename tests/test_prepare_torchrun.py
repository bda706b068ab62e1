"""`torchrun` shards a neural `prepare` by documents: two gloo ranks write what one process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxylm.data.prepare import prepare
from proxylm.data.shards import MANIFEST, Shards
from conftest import write_stdlib_jsonl

REPO = Path(__file__).parent.parent
OPTIONS = {"val_fraction": 0.25, "shard_docs": 4, "max_piece_bytes": 1024}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = write_stdlib_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", files=10, chars=1500)
    with path.open("a") as fh:
        fh.write("not json\n")
    return path


def stored(out: Path) -> dict[str, tuple[str, bytes, bytes, bytes]]:
    found = {}
    for split in ("train", "val"):
        shards = Shards.open(out, split)
        for i in range(len(shards)):
            found[shards.doc_id(i)] = (split, shards.raw(i).tobytes(), shards.symbols(i).tobytes(), shards.side(i).tobytes())
    return found


def test_two_ranks_write_the_symbols_of_one_process(tmp_path, corpus, transformer_dir):
    spec = f"neural:model={transformer_dir},chunk_bytes=64"  # many chunks in flight: few rounds of model calls
    one = prepare(corpus, spec, tmp_path / "one", **OPTIONS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "proxylm", "prepare",
        "--corpus", str(corpus), "--compressor", spec, "--out", str(tmp_path / "two"), "--val-fraction", "0.25",
        "--shard-docs", "4", "--max-piece-bytes", "1024",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("prepared ") == 1  # rank 0 alone prints the summary
    two = json.loads((tmp_path / "two" / MANIFEST).read_text())
    figures = ("documents", "pieces", "raw_bytes", "symbols", "skipped", "splits")
    strip = lambda m: {k: m[k] for k in figures if k != "splits"} | {s: m["splits"][s]["pieces"] for s in m["splits"]}  # noqa: E731
    assert strip(two) == strip(one)
    assert two["run"]["executor"] == "torchrun" and two["run"]["tasks"] == 2
    names = {e["name"][:11] for e in two["splits"]["train"]["shards"]}
    assert names == {"shard-00000", "shard-00001"}  # both ranks wrote shards
    expected = stored(tmp_path / "one")
    assert one["pieces"] > one["documents"]
    assert stored(tmp_path / "two") == expected
