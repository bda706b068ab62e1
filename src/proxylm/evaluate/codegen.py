"""The code-generation evaluation driver: prompts -> any model's `complete` -> sandboxed tests -> pass@k.

    problems = tasks.load_tasks("humaneval")
    report = codegen.evaluate(problems, complete, n=1, ks=[1])
    report.summary()["pass@1"], report.by_task()   # by_task feeds passk.robust_passk

Design choices:
- Model-agnostic: a model plugs in as `complete(prompts: list[str]) -> list[str]`, one continuation per
  prompt (the prompt itself not repeated). Sampling settings, seeds and model-side stop strings live in
  the callable; the driver only decides which prompts go into which call.
- n samples per problem: each prompt appears n times in a row, and calls carry at most `batch_size`
  prompts, so a batched sampler sees whole groups where it can.
- Completions are cut at the stop sequences again here: cheap, and it makes any model comparable.
- Every program runs in `sandbox.run_program` (a fresh process inside bubblewrap), `workers` at a time;
  the summary counts the samples per isolation kind they actually had.
- Samples files are evalplus-compatible JSONL: `task_id` plus `solution` (a whole program) and/or
  `completion` (continues the prompt); `solution` wins when both are present.
- The summary is plain JSON: `pass@k` as top-level keys, counts, tasks no sample solved, and each
  sample's outcome per task.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from proxylm.errors import UserError
from proxylm.evaluate.passk import pass_at_k
from proxylm.evaluate.sandbox import ExecResult, Outcome, SandboxLimits, run_programs
from proxylm.evaluate.tasks import STOP_SEQUENCES, Problem, truncate_at_stop
from proxylm.io import atomic_path

CompleteFn = Callable[[list[str]], list[str]]


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How a model is asked for samples (the settings a `complete` callable is built with)."""

    n: int = 1  # samples per problem
    temperature: float = 0.0  # 0 is greedy decoding
    top_p: float = 1.0  # nucleus sampling mass; 1 keeps the whole distribution
    max_bytes: int = 1024  # longest completion, in bytes (stop sequences usually end it sooner)
    seed: int = 0  # the i-th call of complete() uses seed + i
    batch_size: int = 16  # prompts per call of complete()

    def __post_init__(self) -> None:
        if self.n < 1 or self.batch_size < 1 or self.max_bytes < 1:
            raise ValueError(f"n, batch_size and max_bytes must be >= 1, got {self.n}, {self.batch_size}, {self.max_bytes}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n > 1 and self.temperature == 0:
            raise ValueError(f"n={self.n} samples with temperature 0 would be {self.n} copies of the greedy one; set a temperature > 0")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One answer to one problem: a continuation of its prompt, or a whole program."""

    task_id: str
    completion: str | None = None
    solution: str | None = None

    def __post_init__(self) -> None:
        if self.completion is None and self.solution is None:
            raise ValueError(f"sample for {self.task_id} has neither a completion nor a solution")

    def program(self, problem: Problem) -> str:
        if self.solution is not None:
            return problem.solution_program(self.solution)
        return problem.program(self.completion or "")


@dataclasses.dataclass(frozen=True)
class GradedSample:
    sample: Sample
    result: ExecResult


@dataclasses.dataclass
class CodegenReport:
    """Graded samples of one run, and the pass@k settings to summarise them with."""

    problems: list[Problem]
    graded: list[GradedSample]
    ks: list[int]

    def by_task(self) -> dict[str, list[bool]]:
        """Task id -> pass/fail of each sample in order, for problems that have samples."""
        outcomes: dict[str, list[bool]] = {p.task_id: [] for p in self.problems}
        for g in self.graded:
            outcomes[g.sample.task_id].append(g.result.passed)
        return {t: v for t, v in outcomes.items() if v}

    def summary(self) -> dict:
        by_task = self.by_task()
        results = [g.result for g in self.graded]
        counts = {
            "problems": len(by_task),
            "problems_without_samples": len(self.problems) - len(by_task),
            "samples": len(results),
            **{o.name.lower(): sum(r.outcome is o for r in results) for o in Outcome},
        }
        return {
            **pass_at_k(by_task, self.ks),
            "counts": counts,
            "unsolved_tasks": [t for t, v in by_task.items() if not any(v)],
            "seconds_per_program": sum(r.seconds for r in results) / max(len(results), 1),
            "isolation": _isolation_counts(results),
            "tasks": self._per_task(),
        }

    def _per_task(self) -> dict[str, dict]:
        per_task: dict[str, dict] = {}
        for g in self.graded:
            entry = per_task.setdefault(g.sample.task_id, {"n": 0, "passed": 0, "outcomes": []})
            entry["n"] += 1
            entry["passed"] += g.result.passed
            entry["outcomes"].append(g.result.describe())
        return per_task


def evaluate(
    problems: Sequence[Problem],
    complete: CompleteFn,
    n: int = 1,
    ks: Iterable[int] = (1,),
    limits: SandboxLimits = SandboxLimits(),
    workers: int = 2,
    batch_size: int = 16,
    stop: Sequence[str] = STOP_SEQUENCES,
    progress: bool = False,
) -> CodegenReport:
    """Generate n samples per problem with `complete`, grade them in the sandbox, and keep the results."""
    samples = generate_samples(problems, complete, n=n, batch_size=batch_size, stop=stop, progress=progress)
    return grade(problems, samples, ks=ks, limits=limits, workers=workers, progress=progress)


def generate_samples(
    problems: Sequence[Problem],
    complete: CompleteFn,
    n: int = 1,
    batch_size: int = 16,
    stop: Sequence[str] = STOP_SEQUENCES,
    progress: bool = False,
) -> list[Sample]:
    """n samples per problem, in problem order; `complete` is called with at most `batch_size` prompts."""
    from tqdm import tqdm

    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    queue = [p for p in problems for _ in range(n)]
    samples: list[Sample] = []
    with tqdm(total=len(queue), desc="generate", unit="sample", disable=None if progress else True) as bar:
        for start in range(0, len(queue), batch_size):
            batch = queue[start : start + batch_size]
            completions = complete([p.prompt for p in batch])
            if len(completions) != len(batch):
                raise ValueError(f"complete() returned {len(completions)} completions for {len(batch)} prompts")
            samples += [Sample(p.task_id, completion=truncate_at_stop(c, stop)) for p, c in zip(batch, completions)]
            bar.update(len(batch))
    return samples


def reference_samples(problems: Iterable[Problem]) -> list[Sample]:
    """The canonical solutions as samples: grading them checks the data and the sandbox."""
    return [Sample(p.task_id, completion=p.canonical_solution) for p in problems]


def grade(
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    ks: Iterable[int] = (1,),
    limits: SandboxLimits = SandboxLimits(),
    workers: int = 2,
    progress: bool = False,
) -> CodegenReport:
    """Run every sample's program in the sandbox."""
    by_id = {p.task_id: p for p in problems}
    unknown = sorted({s.task_id for s in samples} - set(by_id))
    if unknown:
        raise UserError(f"{len(unknown)} sample(s) for tasks not among the selected problems, e.g. {unknown[0]!r}")
    programs = [s.program(by_id[s.task_id]) for s in samples]
    results = run_programs(programs, limits, workers=workers, progress=progress, desc="test")
    graded = [GradedSample(s, r) for s, r in zip(samples, results)]
    return CodegenReport(list(problems), graded, list(ks))


def read_samples(path: str | Path) -> list[Sample]:
    """Samples from an evalplus-style JSONL file: {"task_id", "solution" and/or "completion"} per line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"samples file not found: {path}")
    samples = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if line.strip():
                samples.append(_parse_sample(line, path, line_no))
    if not samples:
        raise UserError(f"{path}: no samples")
    return samples


def write_samples(path: str | Path, samples: Iterable[Sample], problems: Iterable[Problem]) -> None:
    """Write evalplus-compatible JSONL (task_id, solution, completion) atomically."""
    prompts = {p.task_id: p.prompt for p in problems}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for s in samples:
            solution = s.solution if s.solution is not None else prompts[s.task_id] + (s.completion or "")
            row = {"task_id": s.task_id, "solution": solution}
            if s.completion is not None:
                row["completion"] = s.completion
            fh.write(json.dumps(row) + "\n")


def _isolation_counts(results: Sequence[ExecResult]) -> dict[str, int]:
    """Samples per isolation kind they actually ran under (one kind per run, unless the sandbox changed)."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.isolation.value] = counts.get(r.isolation.value, 0) + 1
    return counts


def format_table(name: str, summary: dict, ks: Sequence[int]) -> str:
    """A short fixed-width table: benchmark, counts and pass@k."""
    counts = summary["counts"]
    header = ["task", "problems", "samples", "passed", "failed", "timed out"] + [f"pass@{k}" for k in ks]
    row = [name, counts["problems"], counts["samples"], counts["passed"], counts["failed"], counts["timed_out"]]
    row += [f"{summary[f'pass@{k}']:.4f}" for k in ks]
    widths = [max(len(str(h)), len(str(v))) for h, v in zip(header, row)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in (header, row))


def _parse_sample(line: str, path: Path, line_no: int) -> Sample:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("task_id"), str):
        raise UserError(f"{path}:{line_no}: expected an object with a string 'task_id'")
    solution, completion = row.get("solution"), row.get("completion")
    if not isinstance(solution, str) and not isinstance(completion, str):
        raise UserError(f"{path}:{line_no}: needs a string 'solution' or 'completion'")
    return Sample(
        row["task_id"],
        completion=completion if isinstance(completion, str) else None,
        solution=solution if isinstance(solution, str) else None,
    )
