"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run faster without thread start-up, and the suite shares 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_stdlib_jsonl(path, files: int, chars: int):
    """The first `chars` characters of the first `files` standard-library modules, as JSONL at `path`."""
    import json
    import os
    from pathlib import Path

    with Path(path).open("w") as fh:
        for source in sorted(Path(os.__file__).parent.glob("*.py"))[:files]:
            fh.write(json.dumps({"text": source.read_text(errors="replace")[:chars]}) + "\n")
    return path


@pytest.fixture(scope="session")
def split_corpus(tmp_path_factory):
    """20 JSONL documents with their own ids, prepared with gzip at val_fraction 0.3. The held-out
    documents repeat one line and the training ones are varied code, so the splits score apart."""
    import json
    import os
    from pathlib import Path
    from types import SimpleNamespace

    from proxylm.data.corpus import Split, split_of
    from proxylm.data.prepare import prepare

    val_fraction = 0.3
    ids = [f"doc-{i}" for i in range(20)]
    val = [i for i in ids if split_of(i, val_fraction) is Split.VAL]
    modules = sorted(Path(os.__file__).parent.glob("*.py"))
    texts = {i: "x = 1\n" * 20 if i in val else modules[n].read_text(errors="replace")[:150] for n, i in enumerate(ids)}
    base = tmp_path_factory.mktemp("split-corpus")
    corpus = base / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": texts[i]}) + "\n" for i in ids))
    shards = base / "gzip"
    prepare(corpus, "gzip", shards, val_fraction=val_fraction)
    return SimpleNamespace(corpus=corpus, shards=shards, val_fraction=val_fraction, texts=texts,
                           val=val, train=[i for i in ids if i not in val])


def write_eval_checkpoint(directory, model, shards):
    """A model checkpoint with the data.json of a run trained on `shards` (its compressor and manifest)."""
    import json

    from proxylm.data.shards import Shards
    from proxylm.model_io import save_model
    from proxylm.train.checkpoint import DATA_INFO, data_info

    save_model(model, directory)
    info = data_info(Shards.open(shards), "train", model.cfg.vocab_size)
    (directory / DATA_INFO).write_text(json.dumps(info))
    return directory


@pytest.fixture(scope="module")
def transformer_dir(tmp_path_factory):
    """A tiny byte LM saved as a model directory: a neural compressor's model for the tests."""
    from proxylm.model import ModelConfig, Transformer
    from proxylm.model_io import save_model

    torch.manual_seed(0)
    model = Transformer(ModelConfig(dim=32, n_layers=1, n_heads=2, max_seq_len=64))
    with torch.no_grad():
        model.output.weight.mul_(20)  # sharper than a fresh init, so windows hold a few bytes
    return save_model(model, tmp_path_factory.mktemp("model") / "byte-lm")
