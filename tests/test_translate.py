"""The translation probe: layouts as in training, exact on a model that knows the answer, ranges, skips, CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from proxylm import compress, vocab
from proxylm.cli import main
from proxylm.data.mixer import Kind, Plan, build_units
from proxylm.errors import UserError
from proxylm.evaluate.translate import Direction, Pair, crop, greedy_bodies, pairs, probe_translation
from proxylm.model import ModelConfig, ModelOutput, StepOutput, Transformer
from proxylm.model_io import save_model

GZIP = compress.build("gzip")
VOCAB = vocab.vocab_size(GZIP.alphabet_size)
DOCS = [("a", b"def add(a, b):\n    return a + b\n"), ("b", "na\u00efve caf\u00e9\n".encode()), ("c", b"x = 1\n")]


pytestmark = pytest.mark.usefixtures("one_thread")


def layouts(data: bytes) -> list[list[int]]:
    """Every sequence the probe feeds for one document: both translation orders and the plain raw view."""
    raw = vocab.bytes_to_ids(data).tolist()
    sym = vocab.symbols_to_ids(GZIP.encode(data)).tolist()
    c_open, c_close, r_open, r_close = vocab.COMPRESSED_OPEN, vocab.COMPRESSED_CLOSE, vocab.RAW_OPEN, vocab.RAW_CLOSE
    return [
        [vocab.BOS, c_open, *sym, c_close, r_open, *raw, r_close, vocab.EOS],
        [vocab.BOS, r_open, *raw, r_close, c_open, *sym, c_close, vocab.EOS],
        [vocab.BOS, r_open, *raw, r_close, vocab.EOS],
    ]


class KnowsTheAnswer(Transformer):
    """Puts all probability on the id that continues whichever reference sequence the input is a prefix of."""

    def __init__(self, references: list[list[int]], n_raw_heads: int = 1):
        super().__init__(ModelConfig(vocab_size=VOCAB, dim=8, n_layers=1, n_heads=1, max_seq_len=256, n_raw_heads=n_raw_heads))
        self.references = references
        self.history: dict[int, list[int]] = {}

    def next_id(self, prefix: list[int], ahead: int = 0) -> int:
        for ref in self.references:
            if len(ref) > len(prefix) + ahead and ref[: len(prefix)] == prefix:
                return ref[len(prefix) + ahead]
        return vocab.EOS

    def _logits(self, rows: list[list[int]], positions: Sequence[int], head: int) -> torch.Tensor:
        logits = torch.zeros(len(rows), len(positions), self.cfg.head_vocab_size(head))
        for b, row in enumerate(rows):
            for i, t in enumerate(positions):
                target = self.next_id(row[: t + 1], head)
                if target < logits.shape[-1]:
                    logits[b, i, target] = 50.0
        return logits

    def forward(self, ids, pos=None, doc=None, targets=None, weights=None):
        return ModelOutput(logits=self._logits(ids.tolist(), range(ids.shape[1]), 0))

    def forward_step(self, ids, cache, pos=None, doc=None, rows=None):
        """Keeps the ids it reads in its cache (so batch rows that leave take theirs along); padding has doc < 0."""
        (B, T), start = ids.shape, cache.length
        cache.length = start + T
        cache.k[0, :, 0, start : cache.length, 0] = ids.float()
        cache.doc[:, start : cache.length] = doc if doc is not None else 0
        read = [[int(i) for i, d in zip(cache.k[0, b, 0, : cache.length, 0].tolist(), cache.doc[b, : cache.length].tolist()) if d >= 0]
                for b in range(B)]
        heads = []
        for h in range(self.cfg.n_output_heads):
            logits = torch.zeros(B, T, self.cfg.head_vocab_size(h))
            for b, row in enumerate(read):
                seen = (cache.doc[b, : cache.length] >= 0).cumsum(0)[start:].tolist()  # real ids read by each query
                logits[b] = self._logits([row], [max(n - 1, 0) for n in seen], h)[0]
            heads.append(logits)
        if rows is not None:
            heads = [heads[0][..., rows]]
        return StepOutput(logits=heads[0], head_logits=heads)


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    cfg = {"vocab_size": VOCAB, "dim": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 128, "n_raw_heads": 1, **overrides}
    return Transformer(ModelConfig(**cfg)).eval()


def test_prompts_follow_the_training_translation_layout():
    data = DOCS[0][1]
    raw, symbols = np.frombuffer(data, dtype=np.uint8), GZIP.encode(data)
    pair = Pair("a", vocab.bytes_to_ids(data), vocab.symbols_to_ids(symbols))
    for order, direction in (((Kind.COMPRESSED, Kind.RAW), Direction.FORWARD), ((Kind.RAW, Kind.COMPRESSED), Direction.REVERSE)):
        unit = build_units(Plan(units=(order,), sentinels=True), raw, symbols)[0]
        fed = np.concatenate([pair.prompt(direction), pair.target(direction)])
        assert unit.ids[: len(fed)].tolist() == fed.tolist()


def test_a_model_that_knows_the_answer_scores_exactly():
    model = KnowsTheAnswer([seq for _, data in DOCS for seq in layouts(data)])
    report = probe_translation(model, DOCS, GZIP, max_doc_bytes=256)
    for direction in (report.forward, report.reverse):
        assert direction.documents == 3
        assert direction.exact_match == 1.0 and direction.accuracy == 1.0 and direction.written_share == 1.0
        assert direction.bpb == pytest.approx(0.0, abs=1e-12)
    # Without the compressed view the first bytes of a document are anyone's guess, even for this model.
    assert report.raw_bpb > 0.1
    assert report.forward.positions == sum(len(d) for _, d in DOCS)


def test_a_model_that_knows_only_the_raw_view_writes_nothing_right_from_the_compressed_one():
    doc = DOCS[0]
    model = KnowsTheAnswer([layouts(doc[1])[2]])
    report = probe_translation(model, [doc], GZIP)
    assert report.forward.exact_match == 0.0 and report.forward.accuracy == 0.0
    assert report.forward.written_share == 0.0  # it closes the view at once: nothing written, not wrong bytes
    assert report.raw_bpb == pytest.approx(0.0, abs=1e-12)
    assert report.forward.bpb > 10  # each byte costs ~50 nats against a confident wrong guess


def test_random_model_numbers_are_in_range():
    report = probe_translation(tiny_model(), DOCS, GZIP)
    result = report.to_dict()
    for key in ("exact_match", "byte_accuracy"):
        assert 0.0 <= result[key] <= 1.0
    for key in ("exact_match", "accuracy"):
        assert 0.0 <= result["raw_to_compressed"][key] <= 1.0
    assert 0 < result["bpb_given_compressed"] < 20 and 0 < result["raw_bpb"] < 20
    assert math.isfinite(result["raw_to_compressed"]["bpb"])
    assert result["documents"] == 3 and result["raw_bytes"] == sum(len(d) for _, d in DOCS)


def test_batched_greedy_bodies_equal_each_document_decoded_alone():
    model = tiny_model(3)
    selected = list(pairs(DOCS, GZIP, 256, model.cfg.max_seq_len, {}))
    for direction in Direction:
        batched = greedy_bodies(model, selected, direction, batch_size=8)
        alone = [greedy_bodies(model, [p], direction, batch_size=1)[0] for p in selected]
        assert batched == alone
        assert all(len(b) <= len(p.target(direction)) for b, p in zip(batched, selected))


def test_documents_are_cropped_at_utf8_boundaries_and_too_long_ones_are_counted():
    assert crop("ab\u00e9".encode(), 3) == b"ab"
    long_doc = ("long", bytes(range(32, 127)) * 3)
    report = probe_translation(tiny_model(max_seq_len=64), [DOCS[2], long_doc, ("e", b"")], GZIP, max_doc_bytes=400)
    assert report.forward.documents == 1
    assert report.skipped == {"too_long": 1, "empty": 1}


def test_a_model_without_the_compressors_symbols_is_a_user_error():
    byte_model = tiny_model(vocab_size=vocab.BYTE_VOCAB_SIZE)
    with pytest.raises(UserError, match="not trained on this compressor"):
        probe_translation(byte_model, DOCS, GZIP)


def write_proxy_checkpoint(directory, model: Transformer) -> None:
    save_model(model, directory)
    data_info = {"shards": str(directory), "compressor": {"spec": "gzip", "config": {"name": "gzip"}}}
    (directory / "data.json").write_text(json.dumps(data_info))


def test_cli_probe_translate_writes_json(tmp_path, capsys):
    write_proxy_checkpoint(tmp_path / "ckpt", tiny_model())
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d.decode()}) + "\n" for _, d in DOCS) + "broken\n")
    out = tmp_path / "t.json"
    argv = ["probe", "translate", "--ckpt", str(tmp_path / "ckpt"), "--corpus", str(tmp_path / "c.jsonl"), "--split", "all",
            "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["documents"] == 3 and result["compressor"] == "gzip"
    assert result["skipped"] == {"not_json": 1}
    assert {"exact_match", "byte_accuracy", "bpb_given_compressed", "raw_bpb", "raw_to_compressed"} <= set(result)
    assert 0.0 <= result["compressed_to_raw"]["written"] <= 1.0
    assert "compressed -> raw" in capsys.readouterr().out


def test_cli_probe_translate_refuses_a_vanilla_checkpoint(tmp_path, capsys):
    from proxylm.train.checkpoint import STATE_FORMAT, STATE_VERSION, TRAIN_STATE

    write_proxy_checkpoint(tmp_path / "ckpt", tiny_model())
    state = {"format": STATE_FORMAT, "version": STATE_VERSION, "config": {"schedule": {"phases": [{"mode": "vanilla", "rate_start": 1.0}]}}}
    torch.save(state, tmp_path / "ckpt" / TRAIN_STATE)
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    assert main(["probe", "translate", "--ckpt", str(tmp_path / "ckpt"), "--corpus", str(tmp_path / "c.jsonl")]) == 2
    assert "vanilla" in capsys.readouterr().err


def test_cli_probe_translate_needs_a_recorded_compressor(tmp_path, capsys):
    save_model(tiny_model(), tmp_path / "ckpt")  # weights only: no data.json
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    assert main(["probe", "translate", "--ckpt", str(tmp_path / "ckpt"), "--corpus", str(tmp_path / "c.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "records no compressor" in err and err.count("\n") == 1
