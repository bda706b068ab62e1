"""The evaluation driver and `proxylm eval code`, with fake models in place of a checkpoint."""

from __future__ import annotations

import json
import sys
import types
from math import comb
from pathlib import Path

import pytest

from proxylm.cli import main
from proxylm.errors import UserError
from proxylm.evaluate import codegen
from proxylm.evaluate.codegen import Sample, SamplingConfig, evaluate, grade, read_samples, reference_samples, write_samples
from proxylm.evaluate.sandbox import SandboxLimits
from proxylm.evaluate.tasks import MBPP_KNOWN_FAULTS, load_tasks

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MBPP_FILE = DATA / "recode_mbpp_partial.jsonl"
needs_data = pytest.mark.skipif(not MBPP_FILE.is_file(), reason=f"evaluation data not present at {DATA} (outside this project's CI)")

HUMANEVAL = load_tasks("humaneval")
FEW = HUMANEVAL[:6]
LIMITS = SandboxLimits(timeout_s=10)


def oracle(problems):
    """A fake model that answers every prompt with its reference continuation."""
    answers = {p.prompt: p.canonical_solution for p in problems}
    return lambda prompts: [answers[p] for p in prompts]


def test_canonical_humaneval_scores_pass_at_1_of_one():
    report = grade(HUMANEVAL, reference_samples(HUMANEVAL), limits=LIMITS, workers=2)
    summary = report.summary()
    assert summary["pass@1"] == 1.0, summary["unsolved_tasks"]
    assert summary["counts"] == {"problems": 164, "problems_without_samples": 0, "samples": 164, "passed": 164, "failed": 0, "timed_out": 0}


def test_a_perfect_model_passes_and_a_wrong_one_fails():
    assert evaluate(FEW, oracle(FEW), limits=LIMITS).summary()["pass@1"] == 1.0
    wrong = evaluate(FEW, lambda prompts: ["    return None\n"] * len(prompts), limits=LIMITS).summary()
    assert wrong["pass@1"] == 0.0
    assert wrong["unsolved_tasks"] == [p.task_id for p in FEW]
    assert all(t["outcomes"][0].startswith("failed: ") for t in wrong["tasks"].values())


def test_completions_are_cut_at_stop_sequences():
    answer = oracle(FEW)
    rambling = lambda prompts: [a + "\n\ndef unrelated(:\n    syntax error" for a in answer(prompts)]  # noqa: E731
    assert evaluate(FEW, rambling, limits=LIMITS).summary()["pass@1"] == 1.0


def test_prompts_come_in_batches_with_each_prompt_n_times_in_a_row():
    calls = []

    def complete(prompts):
        calls.append(list(prompts))
        return ["    pass\n"] * len(prompts)

    samples = codegen.generate_samples(FEW[:3], complete, n=4, batch_size=5)
    assert [len(c) for c in calls] == [5, 5, 2]
    flat = [p for call in calls for p in call]
    assert flat == [p.prompt for p in FEW[:3] for _ in range(4)]
    assert [s.task_id for s in samples] == [p.task_id for p in FEW[:3] for _ in range(4)]


def test_pass_at_k_over_n_samples_follows_the_estimator():
    answer = oracle(FEW[:2])
    turn = iter(range(10**6))
    alternating = lambda prompts: [a if next(turn) % 2 == 0 else "    return None\n" for a in answer(prompts)]  # noqa: E731
    summary = evaluate(FEW[:2], alternating, n=4, ks=[1, 2], limits=LIMITS, batch_size=4).summary()
    assert summary["pass@1"] == pytest.approx(0.5)
    assert summary["pass@2"] == pytest.approx(1 - comb(2, 2) / comb(4, 2))
    assert summary["tasks"][FEW[0].task_id]["n"] == 4 and summary["tasks"][FEW[0].task_id]["passed"] == 2


def test_a_complete_that_returns_the_wrong_count_is_an_error():
    with pytest.raises(ValueError, match="returned 1 completions for 2 prompts"):
        codegen.generate_samples(FEW[:2], lambda prompts: ["x"])


def test_samples_round_trip_through_evalplus_jsonl(tmp_path):
    samples = [Sample(p.task_id, completion=p.canonical_solution) for p in FEW[:3]]
    samples.append(Sample(FEW[3].task_id, completion="    return None\n"))
    path = tmp_path / "samples.jsonl"
    write_samples(path, samples, FEW)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["solution"] == FEW[0].prompt + FEW[0].canonical_solution
    assert rows[0]["completion"] == FEW[0].canonical_solution
    again = read_samples(path)
    outcomes = grade(FEW, again, limits=LIMITS).by_task()
    assert outcomes == {p.task_id: [i < 3] for i, p in enumerate(FEW[:4])}


def test_a_solution_wins_over_a_completion():
    sample = Sample(FEW[0].task_id, completion="    return None\n", solution=FEW[0].reference)
    assert grade(FEW, [sample], limits=LIMITS).by_task() == {FEW[0].task_id: [True]}


def test_bad_samples_files_name_the_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "completion": "x"}\n{"task_id": "HumanEval/1"}\n')
    with pytest.raises(UserError, match=r"s\.jsonl:2: needs a string 'solution' or 'completion'"):
        read_samples(path)
    path.write_text("{oops\n")
    with pytest.raises(UserError, match=r"s\.jsonl:1: not valid JSON"):
        read_samples(path)


def test_samples_for_unknown_tasks_are_refused():
    with pytest.raises(UserError, match="not among the selected problems"):
        grade(FEW, [Sample("HumanEval/999", completion="")])


def test_sampling_config_refuses_n_copies_of_greedy():
    with pytest.raises(ValueError, match="temperature > 0"):
        SamplingConfig(n=5, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0)


# --- the command -------------------------------------------------------------------------------------------


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@needs_data
def test_cli_canonical_mbpp_reports_known_data_faults_without_failing(tmp_path, capsys):
    rows = [json.loads(line) for line in MBPP_FILE.read_text().splitlines()]
    chosen = [r for r in rows if r["task_id"] in ("MBPP/11", "MBPP/12", "MBPP/56", "MBPP/64")]
    _write_rows(tmp_path / "mbpp.jsonl", chosen)
    out = tmp_path / "results.json"
    status = main(["eval", "code", "--canonical", "--task", f"mbpp:{tmp_path / 'mbpp.jsonl'}", "--json", str(out)])
    results = json.loads(out.read_text())
    assert status == 0
    assert results["pass@1"] == 0.5 and results["mode"] == "canonical" and results["split"] == "test"
    assert results["known_data_faults"] == ["MBPP/56", "MBPP/64"] and set(results["known_data_faults"]) <= MBPP_KNOWN_FAULTS
    assert results["counts"]["problems"] == 4
    printed = capsys.readouterr().out
    assert "pass@1" in printed and "known data faults (2): MBPP/56, MBPP/64" in printed


def test_cli_canonical_fails_on_a_broken_reference(tmp_path, capsys):
    rows = [
        {"task_id": "T/1", "prompt": "def f():\n    '''One.'''\n", "canonical_solution": "    return 1\n", "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"},
        {"task_id": "T/2", "prompt": "def g():\n    '''Two.'''\n", "canonical_solution": "    return 3\n", "test": "def check(c):\n    assert c() == 2\n", "entry_point": "g"},
    ]
    _write_rows(tmp_path / "tasks.jsonl", rows)
    assert main(["eval", "code", "--canonical", "--task", f"humaneval:{tmp_path / 'tasks.jsonl'}"]) == 1
    assert "unsolved (1): T/2" in capsys.readouterr().out


def test_cli_grades_a_samples_file(tmp_path):
    write_samples(tmp_path / "s.jsonl", reference_samples(FEW[:2]), FEW)
    out = tmp_path / "r.json"
    assert main(["eval", "code", "--samples", str(tmp_path / "s.jsonl"), "--limit", "4", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["pass@1"] == 1.0
    assert results["counts"]["problems"] == 2 and results["counts"]["problems_without_samples"] == 2


def test_cli_samples_from_a_checkpoint_through_the_generator(tmp_path, monkeypatch):
    """--ckpt goes through proxylm.evaluate.generate.Generator; a stand-in answers with the references."""
    answers = {p.prompt: p.canonical_solution for p in FEW[:3]}
    calls = []

    class FakeGenerator:
        @classmethod
        def from_checkpoint(cls, path):
            assert path == "fake.ckpt"
            return cls()

        def complete(self, prompts, max_bytes, temperature, top_p, seed, stop):
            calls.append((len(prompts), max_bytes, temperature, seed, tuple(stop)))
            return [answers[p] for p in prompts]

    monkeypatch.setitem(sys.modules, "proxylm.evaluate.generate", types.SimpleNamespace(Generator=FakeGenerator))
    out = tmp_path / "r.json"
    args = ["eval", "code", "--ckpt", "fake.ckpt", "--limit", "3", "--batch-size", "2", "--max-bytes", "300", "--json", str(out)]
    assert main(args) == 0
    results = json.loads(out.read_text())
    assert results["pass@1"] == 1.0 and results["mode"] == "model" and results["sampling"]["max_bytes"] == 300
    assert [c[0] for c in calls] == [2, 1] and [c[3] for c in calls] == [0, 1]  # seed advances per call
    samples = read_samples(tmp_path / "r.samples.jsonl")
    assert [s.task_id for s in samples] == [p.task_id for p in FEW[:3]]


def test_cli_refuses_k_beyond_the_samples(capsys):
    assert main(["eval", "code", "--canonical", "--limit", "2", "--k", "1,10"]) == 2
    assert "--k 10 needs at least 10 samples per task" in capsys.readouterr().err


def test_cli_refuses_greedy_with_several_samples(capsys):
    assert main(["eval", "code", "--ckpt", "x", "--n", "4", "--limit", "1"]) == 2
    assert "temperature > 0" in capsys.readouterr().err


def test_cli_wrong_samples_that_forge_a_pass_fail_and_the_summary_names_the_isolation(tmp_path, capsys):
    """Issue 11, as a user would grade a samples file: wrong completions whose extra top-level code forges a pass."""
    rows = [{"task_id": "T/1", "prompt": "def f():\n    '''One.'''\n", "canonical_solution": "    return 1\n", "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}]
    _write_rows(tmp_path / "tasks.jsonl", rows)
    forged = "    return 2\nimport json, os\njson.dump({'status': 'passed'}, open('result.json', 'w'))\nos._exit(0)\n"
    _write_rows(tmp_path / "s.jsonl", [{"task_id": "T/1", "completion": forged}, {"task_id": "T/1", "completion": "    return 1\n"}])
    out = tmp_path / "r.json"
    assert main(["eval", "code", "--samples", str(tmp_path / "s.jsonl"), "--task", f"humaneval:{tmp_path / 'tasks.jsonl'}", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["tasks"]["T/1"]["passed"] == 1 and results["tasks"]["T/1"]["outcomes"][0].startswith("failed")
    assert list(results["isolation"].values()) == [2] and next(iter(results["isolation"])).startswith("bubblewrap")
    assert results["sandbox"]["unsafe_no_sandbox"] is False
    assert "isolation: bubblewrap" in capsys.readouterr().out


def test_cli_refuses_without_a_sandbox_unless_told_to_run_unsafe(tmp_path, monkeypatch, capsys):
    from proxylm.evaluate.sandbox import BWRAP_ENV, Isolation

    monkeypatch.setenv(BWRAP_ENV, "/bin/false")
    assert main(["eval", "code", "--canonical", "--limit", "2"]) == 2
    assert "cannot run generated code in the sandbox" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert main(["eval", "code", "--canonical", "--limit", "2", "--unsafe-no-sandbox", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["isolation"] == {Isolation.NONE.value: 2} and results["sandbox"]["unsafe_no_sandbox"] is True
    assert "--unsafe-no-sandbox" in capsys.readouterr().err
