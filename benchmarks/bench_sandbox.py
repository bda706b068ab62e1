"""Sandbox overhead: seconds per program under bubblewrap vs a plain process, and the canonical pass rates.

    .venv/bin/python benchmarks/bench_sandbox.py [--programs 64] [--workers 2] [--canonical] [--json FILE]

- Overhead: `--programs` trivial programs (`assert True`) through `run_programs`, `--workers` at a time,
  once inside bubblewrap (the default boundary) and once with `unsafe_no_sandbox` (the same runner as a
  plain process), interleaved in rounds so that both see the same machine load; the best round counts.
  Per program = wall-clock / programs x workers (the time one worker spends on one program, start-up,
  limits, teardown and the verdict included). The ratio bwrap / plain is the cost of the boundary.
- `--canonical` also grades the reference solutions of HumanEval (164) and MBPP's test split (500, from
  ../shared/data or --mbpp PATH) in the sandbox, `--workers` at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from proxylm.evaluate.sandbox import SandboxLimits, run_programs, sandbox_isolation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=64, help="trivial programs per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode (the best counts)")
    parser.add_argument("--workers", type=int, default=2, help="sandboxes at once")
    parser.add_argument("--canonical", action="store_true", help="also grade canonical HumanEval and MBPP (test split)")
    parser.add_argument("--mbpp", help="MBPP JSONL in HumanEval format (default: ../shared/data)")
    parser.add_argument("--json", help="write the figures as JSON")
    args = parser.parse_args()
    limits = SandboxLimits(timeout_s=10.0)
    isolation = sandbox_isolation(limits)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, isolation: {isolation.value}")

    figures: dict = {"cpus": os.cpu_count(), "workers": args.workers, "programs": args.programs, "isolation": isolation.value}
    figures["overhead"] = overhead(args, limits)
    if args.canonical:
        figures["canonical"] = canonical(args, limits)
    figures["load_average_after"] = os.getloadavg()[0]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)


def overhead(args: argparse.Namespace, limits: SandboxLimits) -> dict:
    modes = {"bwrap": limits, "plain": SandboxLimits(timeout_s=10.0, unsafe_no_sandbox=True)}
    sources = ["assert True\n"] * args.programs
    best = {name: float("inf") for name in modes}
    for _ in range(args.rounds):
        for name, mode in modes.items():
            start = time.perf_counter()
            results = run_programs(sources, mode, workers=args.workers)
            elapsed = time.perf_counter() - start
            assert all(r.passed for r in results), f"{name}: a trivial program failed: {results[0].describe()}"
            best[name] = min(best[name], elapsed)
    per_program = {name: best[name] / args.programs * args.workers for name in modes}
    figures = {
        "seconds_per_program": per_program,
        "programs_per_second": {name: args.programs / best[name] for name in modes},
        "bwrap_over_plain": per_program["bwrap"] / per_program["plain"],
    }
    print(
        f"per program ({args.workers} workers): bubblewrap {per_program['bwrap']:.3f} s, plain process {per_program['plain']:.3f} s "
        f"(x{figures['bwrap_over_plain']:.2f}); {figures['programs_per_second']['bwrap']:.1f} programs/s in the sandbox"
    )
    return figures


def canonical(args: argparse.Namespace, limits: SandboxLimits) -> dict:
    from proxylm.evaluate import codegen, tasks

    figures = {}
    for name, spec in (("humaneval", "humaneval"), ("mbpp", f"mbpp:{args.mbpp}" if args.mbpp else "mbpp")):
        problems = tasks.load_tasks(spec, tasks.MbppSplit.TEST if name == "mbpp" else None)
        start = time.perf_counter()
        summary = codegen.grade(problems, codegen.reference_samples(problems), limits=limits, workers=args.workers).summary()
        seconds = time.perf_counter() - start
        figures[name] = {
            "passed": summary["counts"]["passed"], "problems": summary["counts"]["problems"], "seconds": seconds,
            "seconds_per_program": summary["seconds_per_program"], "unsolved": summary["unsolved_tasks"], "isolation": summary["isolation"],
        }  # fmt: skip
        print(f"{name}: {figures[name]['passed']}/{figures[name]['problems']} canonical solutions pass in {seconds:.1f} s "
              f"({summary['seconds_per_program']:.2f} s per program); unsolved: {', '.join(summary['unsolved_tasks']) or 'none'}")  # fmt: skip
    return figures


if __name__ == "__main__":
    main()
