"""torch.compile: a compiled training step equals the eager one, and a run that asks for compile gets it or stops."""

import copy

import pytest
import torch

from proxylm.model import Transformer, model_preset
from proxylm.train import load_train_config, train
from proxylm.train.distributed import CompileError, CompileStatus, compile_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fresh_dynamo():
    """Nothing compiled by an earlier test is reused (in memory; the on-disk kernel cache may be)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def batch(vocab_size: int, B: int = 2, T: int = 32):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab_size, (B, T), generator=g)
    doc = (torch.arange(T) >= T // 3).long().expand(B, T)  # two documents a row: the masked attention path
    return ids, doc, torch.roll(ids, -1, dims=1)


def loss_and_grads(model, ids, doc, targets):
    loss = model(ids, doc=doc, targets=targets).loss
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


def test_a_compiled_training_step_equals_the_eager_one(fresh_dynamo):
    torch.manual_seed(0)
    eager = Transformer(model_preset("small", 400, dim=32, n_layers=1, n_heads=2, max_seq_len=32))
    compiled = copy.deepcopy(eager)
    before = CompileStatus.now()
    compile_model(compiled, per_block=False)  # what the trainer does with run.compile=true
    ids, doc, targets = batch(400)
    loss, grads = loss_and_grads(eager, ids, doc, targets)
    compiled_loss, compiled_grads = loss_and_grads(compiled, ids, doc, targets)
    assert CompileStatus.now().graphs > before.graphs  # it really was compiled, not run eagerly
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def compiled_run_config(shards, out):
    return load_train_config(None, [
        f"data.shards={shards}", "schedule.phases=[{mode: sentinel, rate_start: 0.5}]", "model.preset=small",
        "model.dim=32", "model.n_layers=1", "model.n_heads=2", "pack.seq_len=32", "pack.batch_size=1", "run.max_steps=1",
        "run.dtype=fp32", "run.compile=true", f"run.out={out}", "run.peak_flops=1e11", "run.plot=false",
    ])


@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_a_compile_failure_stops_the_run_and_says_why(split_corpus, tmp_path, fresh_dynamo):
    import torch._inductor.config as inductor

    # A machine without a C++ compiler, no cached kernel to hide it, and errors suppressed as
    # TORCHDYNAMO_SUPPRESS_ERRORS=1 would (pytest's monkeypatch cannot undo torch's config modules).
    no_compiler = inductor.patch({"cpp.cxx": ("/nonexistent/c++",), "force_disable_caches": True})
    suppressed = torch._dynamo.config.patch(suppress_errors=True)
    expected = r"torch.compile failed: .*C\+\+ compiler.*run.compile=false"
    with no_compiler, suppressed, pytest.raises(CompileError, match=expected):
        train(compiled_run_config(split_corpus.shards, tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()  # no checkpoint of an eager run passed off as compiled


def test_a_disabled_dynamo_is_refused_not_ignored(split_corpus, tmp_path):
    disabled = torch._dynamo.config.patch(disable=True)  # as TORCHDYNAMO_DISABLE=1 does
    with disabled, pytest.raises(CompileError, match="TORCHDYNAMO_DISABLE"):
        train(compiled_run_config(split_corpus.shards, tmp_path / "run"))
