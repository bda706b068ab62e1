"""The study's neural proxy: its byte LM trains on the coder's layout (`<bos>` + a chunk from
anywhere in a piece, at most a coder row long), and a 16-bit neural arm prepares, trains, is
evaluated and reported at a tiny size, with its compression ratio in bits."""

import json
import math
from pathlib import Path

import pytest

from conftest import write_stdlib_jsonl

from proxylm.cli import main
from proxylm.data.shards import Shards, read_manifest
from proxylm.errors import UserError
from proxylm.model_io import load_model
from proxylm.study import load_study_config
from proxylm.study.run import coder_chunks, compressor_lm_config

STUDY = """
out: {out}
arms: [proxy-neural]
seeds: [0]
sizes:
  - {{name: micro, preset: small, model: {{dim: 16, n_layers: 1, n_heads: 2}}, symbols: 256}}
data: {{corpus: {corpus}, val_fraction: 0.2, fit_bytes: 100000, max_piece_bytes: 512}}
compressors: {{bpe: "bpe:vocab=300", neural: "neural:window_bits=16"}}
neural_lm: {{preset: small, shape: {{dim: 16, n_layers: 1, n_heads: 2}}, steps: 8, seq_len: 80, batch_size: 4}}
train:
  pack: {{seq_len: 64, batch_size: 2}}
  model: {{n_raw_heads: 1}}
  optim: {{lr: 3.0e-3, warmup_steps: 2}}
  run: {{log_every: 1, plot: false, dtype: fp32}}
eval: {{docs: 2, max_doc_bytes: 96, curve_points: 1, translate_docs: 1, translate_max_bytes: 24, stability_docs: 2, code_sets: []}}
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Twenty standard-library modules (the first 1 kB of each) as JSONL; three are held out."""
    return write_stdlib_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", files=20, chars=1000)


def write_config(directory: Path, corpus: Path) -> Path:
    path = directory / "study.yaml"
    path.write_text(STUDY.format(out=directory / "out", corpus=corpus))
    return path


def test_the_byte_lm_trains_on_coder_rows_not_on_whole_pieces(tmp_path, corpus):
    cfg = load_study_config(write_config(tmp_path, corpus))
    lm_cfg = compressor_lm_config(cfg)
    chunks = coder_chunks(cfg)
    assert chunks.longest == 64  # the coder's max_window_bytes: no row it scores is longer
    assert lm_cfg.data.compressor == "raw" and Path(lm_cfg.data.corpus).name == "chunks.jsonl"
    assert not lm_cfg.data.shards.startswith(str(tmp_path / "out" / "data"))  # not the study's whole pieces
    assert lm_cfg.pack.whole_units  # a chunk is never continued in another row without its <bos>
    assert lm_cfg.model.n_raw_heads is None and lm_cfg.model.dim == 16  # a plain byte LM of neural_lm's shape
    assert compressor_lm_config(cfg).run.out == lm_cfg.run.out  # the same settings resume the same LM ...
    longer = load_study_config(write_config(tmp_path, corpus), ["neural_lm.steps=9"])
    assert compressor_lm_config(longer).run.out != lm_cfg.run.out  # ... other settings train another
    wider = load_study_config(write_config(tmp_path, corpus), ["compressors.neural=neural:window_bits=16,max_window_bytes=100"])
    with pytest.raises(UserError, match=r"neural_lm.seq_len=80 must be at least 105"):
        compressor_lm_config(wider)


def test_a_16_bit_neural_arm_prepares_trains_evaluates_and_reports_its_ratio_in_bits(tmp_path, corpus):
    config = write_config(tmp_path, corpus)
    out = tmp_path / "out"
    assert main(["study", str(config), "--parts", "prepare"]) == 0
    lm_dir = Path(compressor_lm_config(load_study_config(config)).run.out)

    # The LM's corpus: the bpe shards' training pieces, tiled by chunks of 8..64 bytes from <bos>.
    records = [json.loads(line) for line in (lm_dir / "chunks.jsonl").read_text().splitlines()]
    pieces = Shards.open(out / "data/bpe", "train")
    by_piece: dict[str, list[bytes]] = {}
    for record in records:
        by_piece.setdefault(record["id"].rsplit("#", 1)[0], []).append(record["text"].encode())
    assert all(b"".join(by_piece[pieces.doc_id(i)]) == pieces.raw(i).tobytes() for i in range(len(pieces)))
    assert all(len(c) <= 64 + 3 for chunks in by_piece.values() for c in chunks)
    assert sum(len(c) < 64 for chunks in by_piece.values() for c in chunks[:-1]) > len(records) // 2

    neural = read_manifest(out / "data/neural")
    assert neural["compressor"]["alphabet_size"] == 2**16
    lm_checkpoint = sorted((lm_dir / "checkpoints").glob("step-*"))[-1]
    assert neural["compressor"]["config"]["model_sha256"] == load_sha256(lm_checkpoint / "model.safetensors")

    assert main(["study", str(config), "--parts", "train,evaluate,stability,report"]) == 0
    result = json.loads((out / "trials/micro/proxy-neural/seed-0/result.json").read_text())
    vocab_size = load_model(result["train"]["checkpoint"]).cfg.vocab_size
    assert vocab_size == 320 + 2**16
    assert 0 < result["bpb"] < math.log2(vocab_size) + 0.5 and result["translation"] is not None  # two steps: near uniform

    summary = json.loads((out / "results.json").read_text())
    found = summary["compression"]["neural"]
    train = neural["splits"]["train"]
    assert found["bits_per_symbol"] == 16
    assert found["train"]["ratio_bits"] == pytest.approx(8 * train["raw_bytes"] / (16 * train["symbols"]))
    report = (out / "RESULTS.md").read_text()
    shown = f"{found['val']['ratio_bits']:.2f}x in bits on held-out pieces ({found['train']['ratio_bits']:.2f}x on training pieces)"
    assert shown in report and "16-bit symbol" in report and "~2.6x" in report


def load_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
