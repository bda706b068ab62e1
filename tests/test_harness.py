"""The lm-eval adapter: a local task over local JSONL files, offline, through `proxylm eval harness`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from proxylm.cli import main
from proxylm.evaluate.bpb import evaluate_bpb
from proxylm.model import ModelConfig, Transformer
from proxylm.model_io import save_model

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["def add(a, b):\n    return a + b\n", "héllo wörld " * 4, "x" * 150]  # the last one needs two windows

TASKS = {
    "tiny_text": """
task: tiny_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/text.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
""",
    "tiny_choice": """
task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/choice.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
""",
    "tiny_gen": """
task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 12
  do_sample: false
metric_list:
  - metric: exact_match
""",
}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=400, dim=32, n_layers=2, n_heads=4, max_seq_len=96)).eval()


def write_tasks(directory):
    directory.mkdir()
    for name, text in TASKS.items():
        (directory / f"{name}.yaml").write_text(text.format(dir=directory))
    rows = {
        "text.jsonl": [{"text": t} for t in TEXTS],
        "choice.jsonl": [{"question": "1 + 1 =", "choices": [" 2", " 3"], "answer": 0},
                         {"question": "def f():", "choices": ["\n    pass", " ???"], "answer": 1}],
        "gen.jsonl": [{"prompt": "a = ", "answer": "1"}, {"prompt": "b = ", "answer": "2"}],
    }
    for name, items in rows.items():
        (directory / name).write_text("".join(json.dumps(r) + "\n" for r in items))
    return directory


def recording_lm(model):
    """A ProxyLM that keeps every loglikelihood and generate_until request with its answer."""
    from proxylm.evaluate.harness import ProxyLM

    class Recording(ProxyLM):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.scored, self.generated = [], []

        def loglikelihood(self, requests, disable_tqdm=False):
            out = super().loglikelihood(requests, disable_tqdm)
            self.scored += [(r.args, ll) for r, (ll, _) in zip(requests, out)]
            return out

        def generate_until(self, requests, disable_tqdm=False):
            out = super().generate_until(requests, disable_tqdm)
            self.generated += [(r.args, text) for r, text in zip(requests, out)]
            return out

    return Recording(model=model, batch_size=2)


def test_adapter_scores_generates_and_matches_eval_bpb(tmp_path, offline):
    from proxylm.evaluate.generate import Generator
    from proxylm.evaluate.harness import evaluate_tasks

    model = tiny_model()
    lm = recording_lm(model)
    results = evaluate_tasks(lm, ["tiny_text", "tiny_choice", "tiny_gen"], include_path=write_tasks(tmp_path / "tasks"))
    metrics = results["results"]
    expected = evaluate_bpb(model, [(str(i), t.encode()) for i, t in enumerate(TEXTS)]).bpb
    assert metrics["tiny_text"]["bits_per_byte,none"] == pytest.approx(expected, rel=1e-9)

    questions = {"1 + 1 =": ([" 2", " 3"], 0), "def f():": (["\n    pass", " ???"], 1)}
    assert len(lm.scored) == 4
    right = 0
    for question, (choices, answer) in questions.items():
        scores = {args[1]: ll for args, ll in lm.scored if args[0] == question}
        assert set(scores) == {" " + c for c in choices}  # lm-eval's target delimiter, then the choice
        right += max(choices, key=lambda c: scores[" " + c]) == choices[answer]
    assert metrics["tiny_choice"]["acc,none"] == right / 2

    greedy = Generator(model, speculative=False)
    answers = {"a = ": "1", "b = ": "2"}
    assert sorted(args[0] for args, _ in lm.generated) == sorted(answers)
    for (prompt, kwargs), text in lm.generated:
        assert kwargs["until"] == ["\n"] and kwargs["max_gen_toks"] == 12
        assert text == greedy.generate(prompt, 12, stop=["\n"]).text  # the batch decodes what one prompt alone does
    matches = sum(text == answers[prompt] for (prompt, _), text in lm.generated)
    assert metrics["tiny_gen"]["exact_match,none"] == matches / 2


def test_loglikelihood_is_the_continuation_log_probability_and_greedy_flag():
    from proxylm.evaluate.generate import Generator
    from proxylm.evaluate.harness import ProxyLM

    model = tiny_model()
    lm = ProxyLM(model=model)
    greedy = Generator(model, speculative=False).generate("def f", 5).output
    (ll_greedy, is_greedy), (ll_other, other_greedy) = lm._score_continuations([(b"def f", greedy), (b"def f", b"zzzzz")])
    assert greedy != b"zzzzz" and is_greedy and not other_greedy
    assert ll_other < ll_greedy < 0
    # The sum of per-byte log-probabilities of a one-row forward.
    ids = torch.tensor([[1, 12, *[64 + b for b in b"def f" + greedy]]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    assert math.isclose(ll_greedy, sum(float(logp[6 + i, 64 + b]) for i, b in enumerate(greedy)), rel_tol=1e-5)

    class Request:
        def __init__(self, *args):
            self.args = args

    assert lm.loglikelihood([Request("def f", "zzzzz")]) == [(ll_other, False)]  # str requests: UTF-8 bytes


def test_cli_eval_harness_runs_a_local_task(tmp_path, capsys, offline):
    save_model(tiny_model(), tmp_path / "ckpt")
    tasks = write_tasks(tmp_path / "tasks")
    out = tmp_path / "harness.json"
    argv = ["eval", "harness", "--ckpt", str(tmp_path / "ckpt"), "--tasks", "tiny_text,tiny_gen",
            "--include-path", str(tasks), "--json", str(out), "--device", "cpu"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"tiny_text", "tiny_gen"}
    assert "bits_per_byte" in capsys.readouterr().out
    assert main([*argv[:4], "--tasks", "tiny_text", "--include-path", str(tmp_path / "nowhere"), "--device", "cpu"]) == 2
    assert "--include-path" in capsys.readouterr().err
