"""Bits per byte: sliding windows score every target once, hand-computable values, views, checkpoints, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from proxylm import compress, vocab
from proxylm.cli import main
from proxylm.errors import UserError
from proxylm.evaluate.bpb import (
    EvalCheckpoint,
    View,
    evaluate_bpb,
    frame,
    view_for_schedule,
    windows,
)
from proxylm.model import ModelConfig, Transformer
from proxylm.model_io import save_model
from proxylm.train.checkpoint import STATE_FORMAT, STATE_VERSION, TRAIN_STATE

DOCS = [
    ("a", b"def add(a, b):\n    return a + b\n" * 3),
    ("b", b"x"),
    ("c", "caf\u00e9 \u2603 na\u00efve\n".encode() * 4),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(vocab_size: int = 400, seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    cfg = {"vocab_size": vocab_size, "dim": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 64, **overrides}
    return Transformer(ModelConfig(**cfg)).eval()


def uniform_model(vocab_size: int = 400) -> Transformer:
    """Every logit is 0: each target costs exactly ln(vocab_size) nats."""
    model = tiny_model(vocab_size)
    with torch.no_grad():
        model.output.weight.zero_()
    return model


# ---- windows ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5, 61, 62, 63, 200])
@pytest.mark.parametrize(("context", "stride"), [(64, 31), (64, 62), (16, 1), (16, 14), (3, 1)])
def test_windows_score_every_body_target_exactly_once_with_its_own_value(n, context, stride):
    body = np.arange(n, dtype=np.int64) + 100
    framed = frame("d", bytes(n), View.RAW)
    framed = type(framed)(framed.doc_id, framed.header, body, n)
    scored: list[int] = []
    for w in windows(framed, 0, context, stride):
        assert len(w.ids) <= context
        assert list(w.ids[:2]) == [vocab.BOS, vocab.RAW_OPEN]  # the header is pinned in every window
        positions = np.flatnonzero(w.targets != vocab.IGNORE_INDEX)
        for p in positions:
            # the id after position p in the window is the scored target
            following = w.ids[p + 1] if p + 1 < len(w.ids) else None
            assert following is None or following == w.targets[p]
        scored += w.targets[positions].tolist()
    assert sorted(scored) == body.tolist()
    assert len(scored) == len(set(scored))


def test_windows_after_the_first_keep_at_least_span_minus_stride_of_left_context():
    framed = frame("d", bytes(300), View.RAW)
    context, stride = 40, 10
    for i, w in enumerate(windows(framed, 0, context, stride)):
        first_scored = int(np.flatnonzero(w.targets != vocab.IGNORE_INDEX)[0])
        if i:
            assert first_scored - 1 >= (context - 2) - stride  # body ids before the first scored target


# ---- values -----------------------------------------------------------------------------------------


def test_sliding_window_equals_full_context_bpb_when_the_window_covers_the_document():
    model = tiny_model(max_seq_len=128)
    data = DOCS[0][1]  # 99 bytes: with the 2-id header, one window of 101 ids
    sliding = evaluate_bpb(model, [("a", data)], context=128, stride=5)
    assert sliding.documents[0].targets == len(data)
    assert sliding.documents[0].nats == pytest.approx(_full_forward_nats(model, data), rel=1e-5)
    assert sliding.bpb == pytest.approx(_full_forward_nats(model, data) / (math.log(2) * len(data)), rel=1e-5)


def _full_forward_nats(model: Transformer, data: bytes) -> float:
    ids = torch.tensor([[vocab.BOS, vocab.RAW_OPEN, *vocab.bytes_to_ids(data).tolist()]])
    logits = model(ids).logits[0, 1:-1]  # predictions of the bytes
    return torch.nn.functional.cross_entropy(logits, ids[0, 2:], reduction="sum").item()


@pytest.mark.parametrize(("context", "stride"), [(64, 31), (16, 3), (5, 2)])
def test_every_byte_is_scored_once_and_bpb_is_summed_nats_over_summed_bytes(context, stride):
    result = evaluate_bpb(tiny_model(), DOCS, context=context, stride=stride, batch_size=3)
    assert [d.targets for d in result.documents] == [len(data) for _, data in DOCS]
    assert result.raw_bytes == sum(len(data) for _, data in DOCS)
    assert result.bpb == pytest.approx(sum(d.nats for d in result.documents) / (math.log(2) * result.raw_bytes))
    assert all(d.bpb > 0 for d in result.documents)


def test_batching_does_not_change_the_numbers():
    model = tiny_model()
    one = evaluate_bpb(model, DOCS, context=16, stride=7, batch_size=1)
    many = evaluate_bpb(model, DOCS, context=16, stride=7, batch_size=16)
    assert [d.nats for d in one.documents] == pytest.approx([d.nats for d in many.documents], rel=1e-5)


def test_uniform_model_scores_log2_vocab_bits_per_byte():
    result = evaluate_bpb(uniform_model(400), DOCS, context=32, stride=10)
    assert result.bpb == pytest.approx(math.log2(400), rel=1e-6)


def test_token_view_divides_symbol_nats_by_raw_bytes():
    gzip = compress.build("gzip")
    vocab_size = vocab.vocab_size(gzip.alphabet_size)
    result = evaluate_bpb(uniform_model(vocab_size), DOCS, context=32, stride=10, view=View.TOKENS, compressor=gzip)
    symbols = sum(len(gzip.encode(data)) for _, data in DOCS)
    assert result.targets == symbols
    assert result.bpb == pytest.approx(symbols * math.log2(vocab_size) / result.raw_bytes, rel=1e-6)


def test_compressed_view_is_scored_per_raw_byte_too():
    raw = compress.build("raw")
    model = uniform_model(vocab.vocab_size(raw.alphabet_size))
    result = evaluate_bpb(model, DOCS, context=32, stride=10, view=View.COMPRESSED, compressor=raw)
    assert result.to_dict()["view"] == "compressed"
    assert result.bpb == pytest.approx(math.log2(model.cfg.vocab_size), rel=1e-6)  # one symbol per byte


def test_documents_and_pairs_are_both_accepted_and_empty_documents_are_counted():
    from proxylm.data.corpus import Document

    result = evaluate_bpb(tiny_model(), [Document("x", b"abc"), ("y", b""), ("z", b"de")], context=16)
    assert [d.doc_id for d in result.documents] == ["x", "z"]
    assert result.skipped == {"empty": 1}


def test_window_settings_that_cannot_work_are_user_errors():
    model = tiny_model()
    with pytest.raises(UserError, match="max_seq_len 64"):
        evaluate_bpb(model, DOCS, context=65)
    with pytest.raises(UserError, match="--stride 63"):
        evaluate_bpb(model, DOCS, context=64, stride=63)
    with pytest.raises(UserError, match="no room"):
        evaluate_bpb(model, DOCS, context=2)
    with pytest.raises(UserError, match="needs a compressor"):
        evaluate_bpb(model, DOCS, view=View.TOKENS)


# ---- checkpoints ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "view"),
    [
        ([{"mode": "vanilla", "rate_start": 0.0}], View.BYTES),
        ([{"mode": "vanilla", "rate_start": 1.0}], View.TOKENS),
        ([{"mode": "translation", "rate_start": 0.4, "rate_end": 0.9}, {"mode": "sentinel", "rate_start": 0.9}], View.RAW),
        ([{"mode": "vanilla", "rate_start": 0.0, "rate_end": 1.0}], View.TOKENS),
    ],
)
def test_the_view_follows_the_training_schedule(phases, view):
    assert view_for_schedule({"phases": phases}) is view
    assert view_for_schedule(None) is View.RAW


def write_training_checkpoint(run: Path, model: Transformer, phases: list[dict], compressor: str = "gzip") -> Path:
    """A checkpoints directory laid out as the trainer writes it (weights, data.json, train_state.pt, latest)."""
    step = run / "checkpoints" / "step-00000007"
    save_model(model, step)
    data = {"shards": str(run), "compressor": {"spec": compressor, "config": {"name": compressor}}}
    (step / "data.json").write_text(json.dumps(data))
    state = {"format": STATE_FORMAT, "version": STATE_VERSION, "config": {"schedule": {"phases": phases}}}
    torch.save(state, step / TRAIN_STATE)
    (run / "checkpoints" / "latest").write_text(step.name + "\n")
    return step


def test_a_token_checkpoint_is_evaluated_on_its_symbols_from_its_run_directory(tmp_path):
    gzip = compress.build("gzip")
    model = uniform_model(vocab.vocab_size(gzip.alphabet_size))
    step = write_training_checkpoint(tmp_path, model, [{"mode": "vanilla", "rate_start": 1.0}])
    for path in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "latest", step, step / "model.json"):
        ckpt = EvalCheckpoint.load(path)
        assert ckpt.path == step
        assert ckpt.view is View.TOKENS
        assert ckpt.compressor().name == "gzip"


def write_corpus(path, texts: list[str], broken: bool = True) -> None:
    lines = [json.dumps({"text": t}) for t in texts]
    if broken:
        lines.insert(1, '{"text": "unterminated')
    path.write_text("\n".join(lines) + "\n")


def test_cli_eval_bpb_writes_json_and_counts_broken_lines(tmp_path, capsys):
    save_model(uniform_model(), tmp_path / "ckpt")
    write_corpus(tmp_path / "c.jsonl", ["hello world", "def f():\n    return 1\n"])
    out = tmp_path / "bpb.json"
    assert main(["eval", "bpb", "--ckpt", str(tmp_path / "ckpt"), "--corpus", str(tmp_path / "c.jsonl"),
                 "--context", "16", "--stride", "4", "--split", "all", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["bpb"] == pytest.approx(math.log2(400))
    assert result["documents"] == 2 and result["raw_bytes"] == 11 + 22
    assert result["skipped"] == {"not_json": 1}
    assert [d["id"] for d in result["per_document"]] == ["c.jsonl:1", "c.jsonl:3"]
    assert "bpb 8.6439" in capsys.readouterr().out


def test_cli_eval_bpb_of_a_token_model_uses_its_recorded_compressor(tmp_path):
    gzip = compress.build("gzip")
    write_training_checkpoint(tmp_path / "run", uniform_model(vocab.vocab_size(256)), [{"mode": "vanilla", "rate_start": 1.0}])
    write_corpus(tmp_path / "c.jsonl", ["hello hello hello"], broken=False)
    out = tmp_path / "bpb.json"
    assert main(["eval", "bpb", "--ckpt", str(tmp_path / "run"), "--corpus", str(tmp_path / "c.jsonl"), "--split", "all",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    symbols = len(gzip.encode(b"hello hello hello"))
    assert result["view"] == "tokens"
    assert result["bpb"] == pytest.approx(symbols * math.log2(320 + 256) / 17)


def error_line(capsys) -> str:
    """The one error line the CLI printed (after any progress bar), checking there is no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("proxylm: error:")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0])
    return lines[0]


def test_cli_eval_bpb_errors_are_one_line(tmp_path, capsys):
    write_corpus(tmp_path / "c.jsonl", ["x"])
    assert main(["eval", "bpb", "--ckpt", str(tmp_path / "nope"), "--corpus", str(tmp_path / "c.jsonl")]) == 2
    assert "checkpoint not found" in error_line(capsys)
    (tmp_path / "notckpt").mkdir()
    assert main(["eval", "bpb", "--ckpt", str(tmp_path / "notckpt"), "--corpus", str(tmp_path / "c.jsonl")]) == 2
    assert "not a proxylm model checkpoint" in error_line(capsys)
    save_model(tiny_model(), tmp_path / "ckpt")
    (tmp_path / "bad.jsonl").write_text("nope\n")
    assert main(["eval", "bpb", "--ckpt", str(tmp_path / "ckpt"), "--corpus", str(tmp_path / "bad.jsonl")]) == 2
    line = error_line(capsys)
    assert "no document in split 'val' to score" in line and "not_json" in line
