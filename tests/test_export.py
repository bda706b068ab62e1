"""HF export: loads offline with from_pretrained, same logits, generate() equals proxylm's greedy bytes."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from proxylm import vocab
from proxylm.cli import main
from proxylm.evaluate.generate import Generator
from proxylm.model import ModelConfig, Transformer
from proxylm.model_io import save_model
from proxylm.train.checkpoint import STATE_FORMAT, STATE_VERSION, TRAIN_STATE

SHAPES = {
    "proxy-gqa-raw-head": dict(vocab_size=400, n_kv_heads=2, n_raw_heads=1),
    "bytes-tied-two-heads": dict(vocab_size=vocab.BYTE_VOCAB_SIZE, tie_embeddings=True, n_main_heads=2),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    cfg = {"dim": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 96, **overrides}
    return Transformer(ModelConfig(**cfg)).eval()


def export(tmp_path, model: Transformer):
    save_model(model, tmp_path / "ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 0
    return transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True, local_files_only=True)


@pytest.mark.parametrize("shape", SHAPES)
def test_export_loads_offline_and_generates_our_greedy_bytes(tmp_path, shape):
    model = tiny_model(**SHAPES[shape])
    hf = export(tmp_path, model)
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "modeling_proxylm.py",
    ]
    ids = hf.encode_prompt("def add(a, b):")
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits)
    out = hf.generate(ids, max_new_tokens=40, do_sample=False)
    ours = Generator(model).generate("def add(a, b):", 40)
    assert hf.decode_bytes(out[0, ids.shape[1] :]) == ours.output
    assert len(ours.output) > 0


def test_generate_writes_only_byte_ids_and_batches_with_left_padding(tmp_path):
    model = tiny_model(vocab_size=400, n_raw_heads=1)
    with torch.no_grad():
        model.output.weight[vocab.SYMBOL_OFFSET :] *= 200.0  # symbols would win without the byte-only processor
    hf = export(tmp_path, model)
    prompts = ["x", "import os\n"]
    rows = [hf.encode_prompt(p)[0] for p in prompts]
    width = max(len(r) for r in rows)
    pad = lambda r, fill: torch.cat([torch.full((width - len(r),), fill), r])  # noqa: E731
    batch = torch.stack([pad(r, vocab.PAD) for r in rows])
    mask = torch.stack([pad(torch.ones_like(r), 0) for r in rows])
    out = hf.generate(batch, attention_mask=mask, max_new_tokens=24, do_sample=False)
    generator = Generator(model)
    for row, prompt in zip(out, prompts):
        new = row[width:].tolist()
        assert all(vocab.is_byte_id(i) or i in (vocab.RAW_CLOSE, vocab.EOS, vocab.PAD) for i in new)
        assert hf.decode_bytes(new) == generator.generate(prompt, 24).output


def test_exported_config_uses_standard_names(tmp_path):
    export(tmp_path, tiny_model(vocab_size=400, n_kv_heads=2))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 2 and config["num_key_value_heads"] == 2
    assert config["max_position_embeddings"] == 96 and config["vocab_size"] == 400
    assert config["eos_token_id"] == [vocab.RAW_CLOSE, vocab.EOS]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_proxylm.ProxyLMForCausalLM"


def write_training_checkpoint(directory, model: Transformer, phases: list[dict]) -> None:
    save_model(model, directory)
    state = {"format": STATE_FORMAT, "version": STATE_VERSION, "config": {"schedule": {"phases": phases}}}
    torch.save(state, directory / TRAIN_STATE)


def test_a_vanilla_byte_model_is_exported_to_be_prompted_without_sentinels(tmp_path):
    model = tiny_model(vocab_size=vocab.BYTE_VOCAB_SIZE, n_main_heads=2)
    write_training_checkpoint(tmp_path / "ckpt", model, [{"mode": "vanilla", "rate_start": 0.0}])
    assert main(["export", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True, local_files_only=True)
    ids = hf.encode_prompt("x = ")
    assert ids[0, :2].tolist() == [vocab.BOS, vocab.BYTE_OFFSET + ord("x")]
    out = hf.generate(ids, max_new_tokens=30, do_sample=False)
    assert hf.decode_bytes(out[0, ids.shape[1] :]) == Generator.from_checkpoint(tmp_path / "ckpt").generate("x = ", 30).output


def test_a_token_model_is_not_exported(tmp_path, capsys):
    write_training_checkpoint(tmp_path / "ckpt", tiny_model(vocab_size=400), [{"mode": "vanilla", "rate_start": 1.0}])
    assert main(["export", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 2
    assert "token model" in capsys.readouterr().err


def test_cli_export_of_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["export", "--ckpt", str(tmp_path / "missing"), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint not found" in err
    assert not (tmp_path / "hf").exists()
