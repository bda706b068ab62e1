"""The training loop end to end on a tiny model: outputs, exact resumption after SIGKILL (right after a
checkpoint, and at a random step between two), stops, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_stdlib_jsonl
import torch
from safetensors.torch import load_file

from proxylm.config import ConfigError
from proxylm.data.prepare import prepare
from proxylm.errors import UserError
from proxylm.model_io import load_model
from proxylm.train import checkpoint, load_train_config, train
from proxylm.train.metrics import read_metrics

HERE = Path(__file__).parent
REPO = HERE.parent
BASE = """
data: {{shards: {shards}, compressor: "bpe:vocab=300"}}
schedule:
  phases:
    - {{mode: translation, order: random, rate_start: 0.4, rate_end: 0.9, fraction: 0.3}}
    - {{mode: sentinel, rate_start: 0.7}}
pack: {{seq_len: 64, batch_size: 2}}
model: {{preset: small, dim: 32, n_layers: 2, n_heads: 2, n_raw_heads: 1}}
optim: {{lr: 3.0e-3, warmup_steps: 2}}
run: {{out: {out}, max_steps: 6, log_every: 1, peak_flops: 1.0e+11, plot: false}}
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A few dozen standard-library modules (the first 3 kB of each) as JSONL."""
    return write_stdlib_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", files=40, chars=3000)


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "bpe300"
    prepare(corpus, "bpe:vocab=300", out, val_fraction=0.05)
    return out


def config_file(tmp_path, shards, name="run"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(BASE.format(shards=shards, out=tmp_path / name))
    return path


def losses(run_dir):
    keys = ("step", "loss", "loss_raw", "loss_compressed", "lr", "grad_norm")
    return [tuple(r[k] for k in keys) for r in read_metrics(run_dir / "metrics.jsonl")]


def test_a_run_leaves_config_metrics_plot_and_checkpoints(tmp_path, shards):
    cfg = load_train_config(config_file(tmp_path, shards), ["run.plot=true", "ckpt.every=2", "ckpt.keep=2"])
    result = train(cfg)
    run_dir = tmp_path / "run"
    assert result.steps == 6 and result.run_dir == run_dir
    assert load_train_config(run_dir / "config.yaml") == cfg  # the resolved config, readable again
    records = read_metrics(result.metrics)
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all(r["symbols_per_s"] > 0 and 0 < r["mfu"] and r["raw_bytes_per_s"] >= 0 for r in records)
    assert any(r["loss_raw"] is not None for r in records) and any(r["loss_compressed"] is not None for r in records)
    assert records[-1]["flops"] == pytest.approx(result.flops) and result.symbols == 6 * 2 * 64
    assert records[-1]["loss"] < records[0]["loss"]  # it learns something
    assert result.loss_raw is not None and result.loss_compressed is not None
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["latest", "step-00000004", "step-00000006"]
    assert result.checkpoint == run_dir / "checkpoints" / "step-00000006"
    model = load_model(result.checkpoint)  # what evaluation tools do
    assert model.cfg.vocab_size == 320 + 300 and model.cfg.n_raw_heads == 1
    info = checkpoint.read_data_info(result.checkpoint)
    assert info["compressor"]["config"]["name"] == "bpe" and Path(info["manifest"]).is_file()


def run_in_subprocess(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=240, **kwargs)


RESUME_STEPS = ["run.max_steps=10", "ckpt.every=3"]


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory):
    """The run the interrupted ones must reproduce: 10 steps, checkpoints at 3, 6, 9 and 10."""
    base = tmp_path_factory.mktemp("uninterrupted")
    return train(load_train_config(config_file(base, shards, "reference"), RESUME_STEPS))


def resume_and_compare(tmp_path, path, uninterrupted):
    """Resume the killed run of config `path` with --resume; its curve and final weights must be the uninterrupted ones."""
    resumed = run_in_subprocess(["-m", "proxylm", "train", str(path), *RESUME_STEPS, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run_dir = tmp_path / "crashed"
    assert losses(run_dir) == losses(uninterrupted.run_dir)
    final_weights = load_file(run_dir / "checkpoints" / "step-00000010" / "model.safetensors")
    reference_weights = load_file(uninterrupted.checkpoint / "model.safetensors")
    assert final_weights.keys() == reference_weights.keys()
    assert all(torch.equal(final_weights[k], reference_weights[k]) for k in reference_weights)


def test_a_killed_run_resumes_with_the_same_losses(tmp_path, shards, uninterrupted):
    path = config_file(tmp_path, shards, "crashed")
    killed = run_in_subprocess([str(HERE / "run_train.py"), str(tmp_path / "report"), "--config", str(path),
                                "--kill-after-save", "6", *RESUME_STEPS])
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = tmp_path / "crashed"
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == list(range(1, 7))
    assert checkpoint.latest_checkpoint(run_dir / "checkpoints").name == "step-00000006"
    resume_and_compare(tmp_path, path, uninterrupted)


@pytest.mark.parametrize("kill_at", [2, 7], ids=["before-any-checkpoint", "past-the-second"])
def test_a_run_killed_between_checkpoints_resumes_on_the_uninterrupted_curve(tmp_path, shards, uninterrupted, kill_at):
    path = config_file(tmp_path, shards, "crashed")
    killed = run_in_subprocess([str(HERE / "run_train.py"), str(tmp_path / "report"), "--config", str(path),
                                "--kill-at-step", str(kill_at), *RESUME_STEPS])
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = tmp_path / "crashed"
    assert losses(run_dir) == losses(uninterrupted.run_dir)[:kill_at]  # logged past the last checkpoint
    last_saved = checkpoint.latest_checkpoint(run_dir / "checkpoints")
    assert (last_saved.name if last_saved else None) == (f"step-{kill_at // 3 * 3:08d}" if kill_at >= 3 else None)
    resume_and_compare(tmp_path, path, uninterrupted)  # from that checkpoint (or from scratch), the same curve


def test_stops_by_flops_and_by_time(tmp_path, shards):
    cfg = load_train_config(config_file(tmp_path, shards), ["run.max_steps=null", "run.max_flops=1"])
    with pytest.raises(UserError, match="less than one step"):
        train(cfg)
    one_step = cfg.model_config(300)
    from proxylm.model import flops_per_token

    per_step = flops_per_token(one_step, 64) * 2 * 64
    cfg = load_train_config(config_file(tmp_path, shards), ["run.max_steps=null", f"run.max_flops={3.5 * per_step}"])
    result = train(cfg)
    assert result.steps == 3 and result.flops == pytest.approx(3 * per_step)
    timed = config_file(tmp_path, shards, "timed")
    with pytest.raises(ConfigError, match=r"schedule.phases\[0\].fraction needs the run's planned steps"):
        load_train_config(timed, ["run.max_steps=null", "run.max_time_s=10"])
    cfg = load_train_config(timed, ["run.max_steps=null", "run.max_time_s=1e-6", "schedule.phases=[{mode: sentinel}]"])
    assert train(cfg).steps == 1  # checked after each step


def test_gradient_accumulation_matches_a_larger_batch(tmp_path, shards):
    fp32 = ["run.dtype=fp32", "run.max_steps=1", "schedule.phases=[{mode: sentinel, rate_start: 0.5}]"]
    big = train(load_train_config(config_file(tmp_path, shards, "big"), [*fp32, "pack.batch_size=4"]))
    accumulated = train(load_train_config(config_file(tmp_path, shards, "acc"), [*fp32, "pack.batch_size=2", "run.grad_accum=2"]))
    assert accumulated.symbols == big.symbols == 4 * 64
    (one,), (two,) = read_metrics(big.metrics), read_metrics(accumulated.metrics)
    assert two["loss"] == pytest.approx(one["loss"], rel=2e-2)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=5e-2)


def test_prepares_missing_shards_on_first_use(tmp_path, corpus):
    cfg = load_train_config(None, [f"data.shards={tmp_path / 'gzip'}", f"data.corpus={corpus}", "data.compressor=gzip",
                                   "model.preset=small", "model.dim=32", "model.n_layers=1", "model.n_heads=2",
                                   "pack.seq_len=32", "pack.batch_size=1", "run.max_steps=1", f"run.out={tmp_path / 'run'}",
                                   "run.peak_flops=1e11", "run.plot=false"])
    result = train(cfg)
    assert (tmp_path / "gzip" / "manifest.json").is_file() and result.steps == 1
    assert load_model(result.checkpoint).cfg.vocab_size == 320 + 256


def test_bad_input_fails_before_the_first_step(tmp_path, shards):
    path = config_file(tmp_path, shards)
    with pytest.raises(ConfigError, match="unknown key 'model.dimm'"):
        load_train_config(path, ["model.dimm=64"])
    with pytest.raises(UserError, match=r"data.compressor is 'gzip' but .*manifest.json was prepared with 'bpe:vocab=300'"):
        train(load_train_config(path, ["data.compressor=gzip"]))
    train(load_train_config(path, ["run.max_steps=2"]))
    before = [(tmp_path / "run" / name).read_text() for name in ("metrics.jsonl", "config.yaml")]
    with pytest.raises(UserError, match=r"another model shape: dim=32 \(config: 48\)"):
        train(load_train_config(path, ["model.dim=48", "run.max_steps=4", "ckpt.resume=true"]))
    assert [(tmp_path / "run" / name).read_text() for name in ("metrics.jsonl", "config.yaml")] == before  # untouched
    with pytest.raises(UserError, match="data.shards"):
        train(load_train_config(path, [f"data.shards={tmp_path / 'none'}", "data.compressor=null"]))


def test_the_cli_prints_errors_as_one_line(tmp_path, shards):
    path = config_file(tmp_path, shards)
    done = run_in_subprocess(["-m", "proxylm", "train", str(path), "model.dimm=3"])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "unknown key 'model.dimm'" in done.stderr


@pytest.mark.slow
def test_a_compiled_run_matches_the_eager_one(tmp_path, shards):
    eager = train(load_train_config(config_file(tmp_path, shards, "eager"), ["run.max_steps=3"]))
    compiled = train(load_train_config(config_file(tmp_path, shards, "compiled"), ["run.max_steps=3", "run.compile=true"]))
    for one, two in zip(read_metrics(eager.metrics), read_metrics(compiled.metrics)):
        assert two["loss"] == pytest.approx(one["loss"], rel=2e-2)
    assert list(load_model(compiled.checkpoint).state_dict()) == list(load_model(eager.checkpoint).state_dict())


def test_checkpoints_record_the_longest_span_trained_and_evaluation_defaults_to_it(tmp_path, corpus):
    from proxylm.evaluate.bpb import EvalCheckpoint, resolve_window

    shards = tmp_path / "pieces"
    prepare(corpus, "bpe:vocab=300", shards, val_fraction=0.05, max_piece_bytes=40)  # units of <= 40 + 4 ids
    one_view = ["run.max_steps=2", "schedule.phases=[{mode: sentinel, rate_start: 0.5}]"]  # pairs would fill rows
    result = train(load_train_config(config_file(tmp_path, shards), one_view))
    data = json.loads((Path(result.checkpoint) / "data.json").read_text())
    assert 0 < data["trained_context"] <= 40 + 4 < 64
    ckpt = EvalCheckpoint.load(result.checkpoint)
    assert resolve_window(ckpt.model, None, None, 2)[0] == data["trained_context"]  # not max_seq_len 64
    assert resolve_window(ckpt.model, 64, None, 2)[0] == 64  # asked for explicitly
