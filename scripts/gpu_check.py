"""`make gpu-check`: the GPU path in one step, meant to finish in under 8 minutes on one GPU.

    python scripts/gpu_check.py             # install the CUDA build of torch 2.13.0 if needed, run the checks
    python scripts/gpu_check.py --dry-run   # the same driver and tests on the CPU, tiny shapes, nothing installed

1. Unless torch 2.13.0 with CUDA is installed already, pip installs it from PyTorch's CUDA wheel
   index (TORCH_INDEX_URL, default cu128), keeping every other pin of constraints.txt.
2. Runs the tests marked `gpu` (tests/gpu: flex attention vs SDPA, a compiled bf16 run of a ~92M
   model with MFU against the GPU's data-sheet peak, FSDP2 on one device, exact resume,
   generation, neural prepare) in one pytest process.
3. Prints one table: each check, its outcome, seconds, and the figures the test recorded.

The exit status is 0 only when every check passed: a check skipped for want of CUDA is a failure
of the GPU check (the tests themselves skip cleanly, so `pytest -m gpu` on a CPU machine passes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests" / "gpu"
TORCH = "torch==2.13.0"
DEFAULT_INDEX = "https://download.pytorch.org/whl/cu128"
DRY_RUN_ENV = "PROXYLM_GPU_DRY_RUN"  # read by tests/gpu/conftest.py
REPORT_ENV = "PROXYLM_GPU_REPORT"
TEST_BUDGET_S = 420  # leaves ~1 minute of the 8 for installing torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="run on the CPU with tiny shapes, install nothing")
    parser.add_argument("--no-install", action="store_true", help="use the installed torch as it is")
    parser.add_argument("--timeout", type=float, default=TEST_BUDGET_S, help="seconds for the tests (default %(default)s)")
    args, pytest_args = parser.parse_known_args(argv)  # the rest goes to pytest (e.g. -k flex)
    dry_run = args.dry_run or os.environ.get("DRY_RUN", "") not in ("", "0")
    if not (dry_run or args.no_install):
        install_cuda_torch(os.environ.get("TORCH_INDEX_URL", DEFAULT_INDEX))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        report, junit = Path(tmp) / "report.jsonl", Path(tmp) / "junit.xml"
        status = run_checks(report, junit, dry_run, args.timeout, pytest_args)
        tests = outcomes(junit)
        print(table(tests, figures(report), dry_run))
    all_passed = bool(tests) and all(outcome == "passed" for _, outcome, _, _ in tests)
    return status or (0 if all_passed else 1)


def install_cuda_torch(index_url: str) -> None:
    probe = "import torch; print(torch.__version__.split('+')[0], torch.version.cuda or '')"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    version, _, cuda = found.stdout.strip().partition(" ")
    if found.returncode == 0 and version == TORCH.split("==")[1] and cuda:
        print(f"torch {version} with CUDA {cuda} is installed", flush=True)
        return
    print(f"installing the CUDA build of {TORCH} from {index_url}", flush=True)
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    # First torch alone from PyTorch's index (a CPU build in place is replaced), then its CUDA
    # dependencies, with every other package held to constraints.txt.
    subprocess.run([*pip, "--force-reinstall", "--no-deps", TORCH, "--index-url", index_url], check=True)
    subprocess.run([*pip, TORCH, "--extra-index-url", index_url, "-c", str(REPO / "constraints.txt")], check=True)


def run_checks(report: Path, junit: Path, dry_run: bool, timeout: float, extra: list[str]) -> int:
    env = {**os.environ, REPORT_ENV: str(report), DRY_RUN_ENV: "1" if dry_run else "0",
           "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # deterministic cuBLAS for the exact-resume check
    if dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU path, even on a GPU machine
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "pytest", str(TESTS), "-m", "gpu", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", *extra]
    try:
        return subprocess.run(command, cwd=REPO, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"gpu-check: the checks ran past {timeout:.0f} s and were stopped", flush=True)
        return 124


def outcomes(junit: Path) -> list[tuple[str, str, float, str]]:
    """(test, outcome, seconds, message) for every test pytest ran, from its JUnit XML."""
    if not junit.is_file():
        return []
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag, name in (("failure", "FAILED"), ("error", "ERROR"), ("skipped", "skipped")):
            element = case.find(tag)
            if element is not None:
                outcome, message = name, element.get("message", "").splitlines()[0][:120] if element.get("message") else ""
                break
        test = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        rows.append((test, outcome, float(case.get("time", 0)), message))
    return rows


def figures(report: Path) -> list[dict]:
    if not report.is_file():
        return []
    return [json.loads(line) for line in report.read_text().splitlines() if line.strip()]


def table(tests: list[tuple[str, str, float, str]], records: list[dict], dry_run: bool) -> str:
    device = next((r for r in records if r["check"] == "device"), None)
    where = f"{device['name']}, torch {device['torch']}, CUDA {device['cuda']}" if device else "no CUDA device"
    lines = [f"\ngpu-check{' (dry run: CPU, tiny shapes)' if dry_run else ''}: {where}", ""]
    width = max([len(name) for name, _, _, _ in tests] + [40])
    lines.append(f"{'test':<{width}}  {'outcome':<8}  {'seconds':>7}")
    lines += [f"{name:<{width}}  {outcome:<8}  {seconds:>7.1f}  {message}".rstrip() for name, outcome, seconds, message in tests]
    lines += ["", "figures:"]
    for record in records:
        if record["check"] != "device":
            values = ", ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k != "check")
            lines.append(f"  {record['check']:<32} {values}")
    passed = sum(outcome == "passed" for _, outcome, _, _ in tests)
    lines.append(f"\n{passed} of {len(tests)} checks passed")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
