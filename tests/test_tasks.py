"""Benchmark loading: HumanEval from the package, MBPP from ReCode's file, nominal prompts, splits, stops, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from proxylm.errors import UserError
from proxylm.evaluate import tasks
from proxylm.evaluate.tasks import MbppSplit, PromptStyle, load_tasks, nominal_prompt, truncate_at_stop

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MBPP_FILE = DATA / "recode_mbpp_partial.jsonl"
RECODE_HUMANEVAL = DATA / "recode_humaneval_partial.jsonl"
needs_data = pytest.mark.skipif(not MBPP_FILE.is_file(), reason=f"evaluation data not present at {DATA} (outside this project's CI)")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_humaneval_loads_164_problems_whose_prompts_are_nominal():
    problems = load_tasks("humaneval")
    assert len(problems) == 164
    assert problems[0].task_id == "HumanEval/0" and problems[-1].task_id == "HumanEval/163"
    for p in problems:
        assert nominal_prompt(p.prompt, p.entry_point) == p.prompt
        assert f"def {p.entry_point}(" in p.prompt
        assert "def check(candidate)" in p.test


def test_program_is_prompt_completion_test_and_check_call():
    p = load_tasks("humaneval", limit=1)[0]
    program = p.program("    return True\n")
    assert program.startswith(p.prompt + "    return True\n")
    assert program.rstrip().endswith(f"check({p.entry_point})")
    assert p.solution_program(p.reference) == p.program(p.canonical_solution)


def test_limit_takes_the_first_problems():
    assert [p.task_id for p in load_tasks("humaneval", limit=3)] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


@needs_data
@pytest.mark.parametrize(
    "split, first, count", [(None, 11, 500), (MbppSplit.PROMPT, 1, 10), (MbppSplit.VALIDATION, 511, 90), (MbppSplit.TRAIN, 601, 374), (MbppSplit.ALL, 1, 974)]
)
def test_mbpp_splits_follow_the_original_task_numbers(split, first, count):
    problems = load_tasks("mbpp", split=split)
    assert len(problems) == count
    assert problems[0].task_id == f"MBPP/{first}"


@needs_data
def test_mbpp_nominal_prompt_ends_at_the_docstring_and_keeps_the_full_reference():
    rows = {r["task_id"]: r for r in _rows(MBPP_FILE)}
    for p in load_tasks(f"mbpp:{MBPP_FILE}"):
        row = rows[p.task_id]
        assert p.reference == row["prompt"] + row["canonical_solution"]
        assert p.prompt.rstrip().endswith(('"""', "'''"))
        assert p.prompt.count('"""') + p.prompt.count("'''") == 2, p.task_id


@needs_data
def test_partial_prompt_style_keeps_the_files_prompt():
    first = _rows(MBPP_FILE)[10]
    p = load_tasks("mbpp", prompt_style=PromptStyle.PARTIAL, limit=1)[0]
    assert (p.prompt, p.canonical_solution) == (first["prompt"], first["canonical_solution"])


@needs_data
def test_recode_humaneval_file_has_the_packages_nominal_prompts():
    package = {p.task_id: p for p in load_tasks("humaneval")}
    recode = load_tasks(f"humaneval:{RECODE_HUMANEVAL}")
    assert len(recode) == 164
    for p in recode:
        assert p.prompt == package[p.task_id].prompt
    partial = load_tasks(f"humaneval:{RECODE_HUMANEVAL}", prompt_style=PromptStyle.PARTIAL, limit=1)[0]
    assert partial.prompt.startswith(package["HumanEval/0"].prompt) and len(partial.prompt) > len(package["HumanEval/0"].prompt)


def test_gzipped_task_file_is_read(tmp_path):
    row = {"task_id": "T/1", "prompt": "def f():\n    '''Doc.'''\n", "canonical_solution": "    return 1\n", "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}
    path = tmp_path / "tasks.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(row) + "\n")
    (p,) = load_tasks(f"humaneval:{path}")
    assert p.reference == row["prompt"] + row["canonical_solution"]


def test_nominal_prompt_cuts_after_the_entry_points_docstring():
    prompt = 'def helper():\n    """Help."""\n\n\ndef main(x):\n    """Main\n    doc.\n    """\n    y = x\n'
    assert nominal_prompt(prompt, "main") == 'def helper():\n    """Help."""\n\n\ndef main(x):\n    """Main\n    doc.\n    """\n'
    assert nominal_prompt("def f(x):\n    return x\n", "f") == "def f(x):\n    return x\n"


def test_truncate_at_the_earliest_stop_sequence():
    completion = "    return x\n\n\ndef other():\n    pass\nif True:\n"
    assert truncate_at_stop(completion) == "    return x\n\n"
    assert truncate_at_stop("    if x:\n        return 1\n") == "    if x:\n        return 1\n"  # indented: not a stop
    assert truncate_at_stop("    return 1\n```\nmore") == "    return 1"
    assert truncate_at_stop("abc", stop=[]) == "abc"


def test_unknown_benchmark_names_the_choices():
    with pytest.raises(UserError, match="humaneval, mbpp"):
        load_tasks("apps")


def test_split_on_humaneval_is_an_error():
    with pytest.raises(UserError, match="MBPP only"):
        load_tasks("humaneval", split=MbppSplit.TRAIN)


def test_missing_task_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="task file not found"):
        load_tasks(f"mbpp:{tmp_path / 'nope.jsonl'}")


def test_bad_json_line_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"task_id": "MBPP/11"}\n{not json\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:1: missing or non-string field\(s\) prompt"):
        load_tasks(f"mbpp:{path}")
    path.write_text("\n{not json\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not valid JSON"):
        load_tasks(f"mbpp:{path}")


def test_absent_default_mbpp_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"MBPP data not found .* --task mbpp:PATH"):
        load_tasks("mbpp")
