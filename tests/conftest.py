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
