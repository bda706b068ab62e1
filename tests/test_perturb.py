"""ReCode-style perturbations: seeded, visible in the prompt, and meaning-preserving (the reference still passes)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from proxylm.evaluate.codegen import grade, reference_samples
from proxylm.evaluate.perturb import PerturbKind, perturb, perturb_problems, perturb_text
from proxylm.evaluate.sandbox import SandboxLimits
from proxylm.evaluate.tasks import MBPP_KNOWN_FAULTS, load_tasks

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "recode_mbpp_partial.jsonl").is_file(), reason=f"evaluation data not present at {DATA} (outside this project's CI)")

HUMANEVAL = load_tasks("humaneval")
# A spread of shapes: helper functions, several docstrings, imports, one-letter parameters, comparisons.
SAMPLE_IDS = ["HumanEval/0", "HumanEval/10", "HumanEval/12", "HumanEval/38", "HumanEval/55", "HumanEval/129"]
SAMPLE = [p for p in HUMANEVAL if p.task_id in SAMPLE_IDS]

DOCUMENT = '''"""A small module."""
import math


def area(radius, scale=1.0):
    """Return the area of a circle with the given radius."""
    # square the radius first
    squared = radius * radius
    if squared > 0:
        return math.pi * squared * scale
    return 0.0


def ring(outer, inner):
    return area(outer) - area(inner, scale=1.0)
'''


def test_perturbation_is_deterministic_in_the_seed():
    for kind in PerturbKind:
        assert perturb(HUMANEVAL[0], kind, 7) == perturb(HUMANEVAL[0], kind, 7)
        assert perturb_text(DOCUMENT, kind, 7) == perturb_text(DOCUMENT, kind, 7)


@pytest.mark.parametrize("kind", list(PerturbKind))
def test_seeds_give_different_visible_prompts(kind):
    problem = HUMANEVAL[0]
    prompts = {perturb(problem, kind, seed).prompt for seed in range(5)}
    assert problem.prompt not in prompts
    assert len(prompts) >= 3


def test_references_of_perturbed_problems_still_pass():
    perturbed = [perturb(p, kind, seed) for p in SAMPLE for kind in PerturbKind for seed in (0, 1)]
    assert all(q.prompt != p.prompt for q, p in zip(perturbed, [p for p in SAMPLE for _ in range(8)]))
    report = grade(perturbed, reference_samples(perturbed), limits=SandboxLimits(timeout_s=10), workers=2)
    assert report.summary()["unsolved_tasks"] == []


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("benchmark", ["humaneval", "mbpp"])
def test_references_of_every_perturbed_problem_still_pass(benchmark):
    problems = [p for p in load_tasks(benchmark) if p.task_id not in MBPP_KNOWN_FAULTS]
    for kind in PerturbKind:
        for seed, perturbed in perturb_problems(problems, kind, range(3)).items():
            report = grade(perturbed, reference_samples(perturbed), limits=SandboxLimits(timeout_s=20), workers=2)
            assert report.summary()["unsolved_tasks"] == [], (kind, seed)


def test_function_rename_changes_the_entry_point_everywhere():
    for seed in range(5):
        p = HUMANEVAL[0]
        q = perturb(p, PerturbKind.FUNC_NAME, seed)
        assert q.entry_point != p.entry_point and q.entry_point.isidentifier()
        assert not re.search(rf"\b{p.entry_point}\b", q.prompt)
        assert q.prompt.count(q.entry_point) == p.prompt.count(p.entry_point)
        assert q.program(q.canonical_solution).rstrip().endswith(f"check({q.entry_point})")


def test_docstring_edits_touch_only_prose():
    p = HUMANEVAL[0]
    for seed in range(5):
        q = perturb(p, PerturbKind.DOCSTRING, seed)
        old, new = p.prompt.split("\n"), q.prompt.split("\n")
        assert len(old) == len(new)
        changed = [(a, b) for a, b in zip(old, new) if a != b]
        assert changed
        for a, b in changed:
            assert not a.lstrip().startswith((">>>", "def ", "from ")), a
        assert q.canonical_solution == p.canonical_solution and q.test == p.test


def test_syntax_perturbations_keep_the_program_parseable_and_change_its_code():
    for p in SAMPLE:
        for seed in range(4):
            q = perturb(p, PerturbKind.SYNTAX, seed)
            assert ast.dump(ast.parse(q.reference)) != ast.dump(ast.parse(p.reference)), (p.task_id, seed)


@pytest.mark.parametrize("kind", list(PerturbKind))
def test_python_documents_stay_valid_python(kind):
    outputs = {perturb_text(DOCUMENT, kind, seed) for seed in range(6)}
    assert DOCUMENT not in outputs
    for text in outputs:
        ast.parse(text)


def test_prose_gets_word_edits_and_no_code_edits():
    prose = "The quick brown fox jumps over the lazy dog. Another sentence follows here."
    assert perturb_text(prose, PerturbKind.FUNC_NAME, 0) == prose  # nothing to rename
    edited = perturb_text(prose, PerturbKind.DOCSTRING, 0)
    assert edited != prose and len(edited.split()) >= len(prose.split())


def test_kind_can_be_given_by_name_and_unknown_kinds_are_refused():
    assert perturb("def f(x):\n    return x\n", "func_name", 0) != "def f(x):\n    return x\n"
    with pytest.raises(ValueError):
        perturb("text", "shuffle", 0)
