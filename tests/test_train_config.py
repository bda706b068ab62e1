"""The training config tree: YAML, dotted overrides, validation, shipped configs."""

from pathlib import Path

import pytest

from proxylm import vocab
from proxylm.config import ConfigError, dump_yaml, from_dict, read_yaml
from proxylm.data.mixer import Mode
from proxylm.train.config import DType, Strategy, TrainConfig, load_train_config

ARMS = ("bytes", "tokens-bpe", "proxy-bpe", "proxy-bpe-bytes", "proxy-gzip")
SIZES = ("tiny", "0.5b", "1.5b", "4b", "7b", "14b")
CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIGS = [CONFIG_DIR / f"{size}-{arm}.yaml" for size in SIZES for arm in ARMS]


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_then_dotted_overrides(tmp_path):
    path = write(tmp_path, "data: {shards: runs/x}\nmodel: {preset: small, dim: 64}\nrun: {max_steps: 10}\n")
    cfg = load_train_config(path, ["model.dim=96", "optim.lr=3e-4", "dist.strategy=fsdp", "run.dtype=fp32"])
    assert cfg.model.dim == 96 and cfg.optim.lr == 3e-4
    assert cfg.dist.strategy is Strategy.FSDP and cfg.run.dtype is DType.FP32
    model = cfg.model_config(alphabet_size=1000)
    assert (model.dim, model.n_layers, model.vocab_size) == (96, 4, vocab.vocab_size(1000))
    assert model.max_seq_len == cfg.pack.seq_len  # the context defaults to the trained length


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.dimm=3", "unknown key 'model.dimm'"),
        ("optimizer.lr=1", "unknown key 'optimizer'"),
        ("dist.strategy=zero", "'dist.strategy' must be one of"),
        ("run.dtype=fp8", "'run.dtype' must be one of"),
        ("model.preset=huge", "model.preset must be one of"),
        ("run.grad_accum=0", "run.grad_accum"),
        ("ckpt.keep=0", "ckpt.keep"),
        ("model.vocab_size=999", "unknown key 'model.vocab_size'"),  # follows from the shards
    ],
)
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_train_config(None, ["data.shards=x", "run.max_steps=1", override])


def test_a_run_needs_a_stop_and_data(tmp_path):
    with pytest.raises(ConfigError, match="needs a stop"):
        load_train_config(write(tmp_path, "data: {shards: x}\nrun: {out: y}\n"))
    with pytest.raises(ConfigError, match="data.shards is required"):
        load_train_config(None, ["data.corpus=stdlib"])
    with pytest.raises(ConfigError, match="data.compressor"):
        load_train_config(None, ["data.shards=x", "data.corpus=stdlib"])


def test_byte_only_schedules_need_byte_ids_only(tmp_path):
    path = write(tmp_path, "data: {shards: x}\nschedule: {phases: [{mode: vanilla, rate_start: 0.0}]}\nrun: {max_steps: 1}\n")
    cfg = load_train_config(path)
    assert cfg.schedule.phases[0].mode is Mode.VANILLA
    assert cfg.model_config(alphabet_size=4096).vocab_size == vocab.BYTE_VOCAB_SIZE


def test_the_resolved_config_reads_back_the_same(tmp_path):
    cfg = load_train_config(CONFIGS[0], ["model.dim=128", "run.max_flops=1e15"])
    again = from_dict(TrainConfig, read_yaml(write(tmp_path, dump_yaml(cfg))))
    assert again == cfg


def test_every_arm_ships_at_every_size():
    assert [p for p in CONFIGS if not p.is_file()] == []


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load_and_match_their_arm(path):
    cfg = load_train_config(path)
    model = cfg.model_config(alphabet_size=256)
    arm = path.stem.split("-", 1)[1]
    modes = [phase.mode for phase in cfg.schedule.phases]
    if arm == "bytes":
        assert modes == [Mode.VANILLA] and cfg.schedule.phases[0].rate_start == 0.0
        assert model.vocab_size == vocab.BYTE_VOCAB_SIZE
    elif arm.startswith("tokens"):
        assert modes == [Mode.VANILLA] and cfg.schedule.phases[0].rate_start == 1.0
    elif arm.startswith("proxy"):
        assert modes == [Mode.TRANSLATION, Mode.SENTINEL] and model.n_raw_heads == 1
        assert cfg.data.compressor.split(":")[0] == arm.removeprefix("proxy-")
    size = path.stem.split("-")[0]
    if size != "tiny":
        peak = {"0.5b": 1.2e-3, "1.5b": 9e-4, "4b": 7e-4, "7b": 5e-4, "14b": 5e-4}[size]
        assert (cfg.model.preset, cfg.optim.lr, cfg.optim.warmup_steps) == (size, peak, 500)


@pytest.mark.parametrize("name", ["neural-compressor-tiny", "neural-compressor-40m"])
def test_compressor_lm_configs_train_on_whole_coder_rows(name):
    """The neural proxy's byte LM learns `<bos>` + a window: every chunk must reach the model
    whole, from its `<bos>`, and be no longer than the coder's longest row."""
    from proxylm.compress.byte_model import LONGEST_CHUNK
    from proxylm.compress.neural import NeuralConfig

    cfg = load_train_config(CONFIG_DIR / f"{name}.yaml")
    assert LONGEST_CHUNK == NeuralConfig().longest_row
    assert cfg.pack.whole_units and cfg.pack.seq_len >= LONGEST_CHUNK + 5  # <bos>, <eos>, a character's end


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    import torch

    from proxylm.train.config import resolve_dtype

    cpu = torch.device("cpu")
    assert resolve_dtype(DType.FP32, cpu) is DType.FP32 and resolve_dtype(DType.BF16, cpu) is DType.BF16
    for avx512_bf16, amx, expected in ((False, False, DType.FP32), (True, False, DType.BF16), (False, True, DType.BF16)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        assert resolve_dtype(DType.AUTO, cpu) is expected
