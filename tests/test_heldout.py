"""Evaluation scores held-out documents by default: prepare's hash split, named in every result."""

import json

import pytest
import torch

from conftest import write_eval_checkpoint
from proxylm import vocab
from proxylm.cli import main
from proxylm.evaluate.bpb import evaluate_bpb
from proxylm.evaluate.heldout import EvalSplit, open_eval_documents
from proxylm.model import ModelConfig, Transformer

pytestmark = pytest.mark.usefixtures("one_thread")
GZIP_VOCAB = vocab.vocab_size(256)


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=GZIP_VOCAB, dim=32, n_layers=1, n_heads=2, max_seq_len=256, n_raw_heads=1)
    return Transformer(cfg).eval()


@pytest.fixture(scope="module")
def ckpt(split_corpus, tmp_path_factory):
    return write_eval_checkpoint(tmp_path_factory.mktemp("heldout") / "ckpt", tiny_model(), split_corpus.shards)


def eval_bpb(ckpt, corpus, out, *extra) -> dict:
    assert main(["eval", "bpb", "--ckpt", str(ckpt), "--corpus", str(corpus), "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def scored_ids(result: dict) -> list[str]:
    return [d["id"] for d in result["per_document"]]


def direct_bpb(split_corpus, ids) -> float:
    docs = [(i, split_corpus.texts[i].encode()) for i in ids]
    return evaluate_bpb(tiny_model(), docs).bpb


def test_eval_bpb_scores_the_val_split_by_default_and_train_only_when_asked(split_corpus, ckpt, tmp_path, capsys):
    val = eval_bpb(ckpt, split_corpus.corpus, tmp_path / "val.json")
    assert "of split val" in capsys.readouterr().out
    train = eval_bpb(ckpt, split_corpus.corpus, tmp_path / "train.json", "--split", "train")
    everything = eval_bpb(ckpt, split_corpus.corpus, tmp_path / "all.json", "--split", "all")
    assert split_corpus.val and split_corpus.train  # the fixture has both
    assert (val["split"], train["split"], everything["split"]) == ("val", "train", "all")
    assert val["val_fraction"] == split_corpus.val_fraction  # from the checkpoint's preparation, not the default
    assert scored_ids(val) == split_corpus.val and scored_ids(train) == split_corpus.train
    assert sorted(scored_ids(everything)) == sorted(split_corpus.val + split_corpus.train)
    assert val["bpb"] == pytest.approx(direct_bpb(split_corpus, split_corpus.val), rel=1e-6)
    assert train["bpb"] == pytest.approx(direct_bpb(split_corpus, split_corpus.train), rel=1e-6)
    assert abs(val["bpb"] - train["bpb"]) > 0.01  # different text, measurably different scores


def test_eval_bpb_reads_the_splits_of_a_prepared_directory(split_corpus, ckpt, tmp_path):
    from_corpus = eval_bpb(ckpt, split_corpus.corpus, tmp_path / "corpus.json")
    from_shards = eval_bpb(ckpt, split_corpus.shards, tmp_path / "shards.json")
    assert scored_ids(from_shards) == scored_ids(from_corpus) and from_shards["split"] == "val"
    assert from_shards["bpb"] == pytest.approx(from_corpus["bpb"], rel=1e-9)
    train = eval_bpb(ckpt, split_corpus.shards, tmp_path / "train.json", "--split", "train")
    assert scored_ids(train) == split_corpus.train


def test_limit_counts_documents_of_the_split(split_corpus):
    docs = open_eval_documents(split_corpus.corpus, EvalSplit.VAL, split_corpus.val_fraction, limit=2)
    assert [d.id for d in docs] == split_corpus.val[:2]
    assert docs.describe() == {"split": "val", "val_fraction": split_corpus.val_fraction}


def test_a_file_with_no_held_out_document_says_how_to_score_it_all(split_corpus, ckpt, tmp_path, capsys):
    (tmp_path / "train-only.jsonl").write_text("".join(
        json.dumps({"id": i, "text": split_corpus.texts[i]}) + "\n" for i in split_corpus.train))
    assert main(["eval", "bpb", "--ckpt", str(ckpt), "--corpus", str(tmp_path / "train-only.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "no document in split 'val'" in err and "--split all" in err and "Traceback" not in err


def test_probe_translate_probes_the_val_split_by_default(split_corpus, ckpt, tmp_path, capsys):
    out = tmp_path / "t.json"
    argv = ["probe", "translate", "--ckpt", str(ckpt), "--corpus", str(split_corpus.corpus), "--max-doc-bytes", "48",
            "--json", str(out)]
    for split, ids in (("val", split_corpus.val), ("train", split_corpus.train)):
        assert main([*argv, "--split", split] if split != "val" else argv) == 0
        result = json.loads(out.read_text())
        assert result["split"] == split and result["documents"] == len(ids) and not result["skipped"]
        cropped = [(i, split_corpus.texts[i].encode()[:48]) for i in ids]
        assert result["raw_bpb"] == pytest.approx(evaluate_bpb(tiny_model(), cropped, stride=254).bpb, rel=1e-6)
        assert f"of split {split}" in capsys.readouterr().out


def test_eval_robust_perturbs_the_val_split_by_default(split_corpus, ckpt, tmp_path):
    out = tmp_path / "r.json"
    argv = ["eval", "robust", "--ckpt", str(ckpt), "--no-code", "--corpus", str(split_corpus.corpus),
            "--kinds", "format", "--bpb-seeds", "1", "--json", str(out)]
    assert main(argv) == 0
    text = json.loads(out.read_text())["text"]
    assert text["split"] == "val" and text["documents"] == len(split_corpus.val)
    assert text["bpb"] == pytest.approx(direct_bpb(split_corpus, split_corpus.val), rel=1e-6)
    assert main([*argv, "--split", "train"]) == 0
    assert json.loads(out.read_text())["text"]["documents"] == len(split_corpus.train)
