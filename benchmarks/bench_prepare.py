"""`prepare` end to end on the built-in corpus, and its peak memory on a corpus ten times larger.

    .venv/bin/python benchmarks/bench_prepare.py [--workers 2] [--repeat 10] [--specs raw,gzip,bpe:vocab=8192] [--json FILE]

- Each prepare runs as `python -m proxylm prepare` in a fresh process; its resident memory is
  sampled every 50 ms, summed over the process and its workers (shared pages counted in each
  process, so this overstates the true footprint).
- Figures: wall seconds, MB/s end to end (raw bytes / wall time, process start and BPE fitting
  included), MB/s of the encoding pass alone (fitting excluded), ratio, peak RSS, and CPU
  seconds of the whole process tree with MB per CPU-second: on a shared machine the wall-clock
  figures fall with other people's load, the CPU figure much less (x2 = an idle 2-core bound).
- The large corpus is the stdlib written `--repeat` times into one JSONL file (each copy a
  distinct document: ids are path:line), prepared with the last spec given (BPE by default).
- A re-run of the first stdlib prepare shows the cost of an idempotent resume.
- For a BPE spec, the stdlib is prepared again with the tokenizer it fitted (`bpe:path=...`):
  the end-to-end speed of a fitted tokenizer (issue 13's target), in one process with its
  workers and as `--executor datatrove --tasks 2 x workers` (tasks take whole files).
- Targets (issues 2, 13): BPE prepare >= 20 MB/s on 2 idle cores with a fitted tokenizer; peak
  RSS within 1.5 GB for 10x stdlib with 2 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from proxylm.compress import split_specs
from proxylm.data.corpus import open_corpus

RSS_LIMIT = 1.5e9
BPE_TARGET = 20e6


class PeakRSS:
    """Polls the summed RSS of a process tree in a background thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            total = 0
            try:
                for proc in [self.process, *self.process.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_prepare(corpus: str, spec: str, out: Path, workers: int, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "proxylm", "prepare", "--corpus", corpus, "--compressor", spec,
           "--out", str(out), "--workers", str(workers), *extra]
    cpu_before = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    monitor = PeakRSS(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    peak = monitor.stop()
    cpu = _children_cpu() - cpu_before  # the prepare process and its (joined) workers, all threads
    if proc.returncode != 0:
        raise SystemExit(f"prepare {spec} failed ({proc.returncode}):\n{stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    fit_s = (manifest["compressor"].get("fit") or {}).get("seconds", 0.0) if manifest["run"]["shards_written"] else 0.0
    return {
        "compressor": spec,
        "corpus": corpus,
        "workers": workers,
        "documents": manifest["documents"],
        "raw_bytes": manifest["raw_bytes"],
        "ratio": manifest["ratio"],
        "seconds": wall,
        "bytes_per_s": manifest["raw_bytes"] / wall,
        "fit_s": fit_s,
        "encode_bytes_per_s": manifest["raw_bytes"] / max(manifest["run"]["seconds"] - fit_s, 1e-9),
        "cpu_seconds": cpu,
        "bytes_per_cpu_s": manifest["raw_bytes"] / max(cpu, 1e-9),
        "peak_rss": peak,
        "shards_written": manifest["run"]["shards_written"],
        "shards_reused": manifest["run"]["shards_reused"],
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_repeated_jsonl(path: Path, repeat: int) -> int:
    docs = [d.data.decode("utf-8") for d in open_corpus("stdlib")]
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(repeat):
            for text in docs:
                fh.write(json.dumps({"text": text}) + "\n")
                written += len(text.encode("utf-8"))
    return written


def show(row: dict, label: str) -> None:
    spec = "bpe (fitted)" if row["compressor"].startswith("bpe:path=") else row["compressor"]
    print(
        f"{label:<26} {spec:<16} {row['documents']:>7,} {row['raw_bytes'] / 1e6:>8.1f} {row['seconds']:>7.1f}"
        f" {row['bytes_per_s'] / 1e6:>7.2f} {row['fit_s']:>6.1f} {row['encode_bytes_per_s'] / 1e6:>8.2f}"
        f" {row['ratio']:>6.3f} {row['peak_rss'] / 1e6:>8.0f} {row['cpu_seconds']:>6.1f} {row['bytes_per_cpu_s'] / 1e6:>9.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10, help="copies of the stdlib in the large corpus (0: skip)")
    parser.add_argument("--specs", default="raw,gzip,bpe:vocab=8192", help="comma-separated compressor specs")
    parser.add_argument("--json", help="write the figures as JSON")
    args = parser.parse_args()
    specs = split_specs(args.specs)

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{'run':<26} {'compressor':<16} {'docs':>7} {'MB':>8} {'wall s':>7} {'MB/s':>7} {'fit s':>6}"
          f" {'enc MB/s':>8} {'ratio':>6} {'RSS MB':>8} {'CPU s':>6} {'MB/CPU-s':>9}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (figures in MB/s drop when others share the CPUs; MB/CPU-s does less)")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="proxylm-bench-"))
    try:
        for spec in specs:
            row = run_prepare("stdlib", spec, work / f"stdlib-{len(rows)}", args.workers)
            rows.append(row | {"run": "stdlib"})
            show(row, "stdlib")
        again = run_prepare("stdlib", specs[0], work / "stdlib-0", args.workers)
        rows.append(again | {"run": "stdlib re-run (resume)"})
        show(again, "stdlib re-run (resume)")
        for k, spec in enumerate(specs):
            if spec.startswith("bpe:"):
                fitted = f"bpe:path={work / f'stdlib-{k}' / 'tokenizer.json'}"
                row = run_prepare("stdlib", fitted, work / "fitted", args.workers)
                rows.append(row | {"run": "stdlib fitted"})
                show(row, "stdlib, fitted BPE")
                tasks = str(2 * args.workers)
                row = run_prepare("stdlib", fitted, work / "fitted-dt", args.workers, "--executor", "datatrove", "--tasks", tasks)
                rows.append(row | {"run": f"stdlib fitted datatrove {tasks}"})
                show(row, f"  datatrove, {tasks} tasks")
        if args.repeat:
            big = work / f"stdlib-x{args.repeat}.jsonl"
            write_repeated_jsonl(big, args.repeat)
            row = run_prepare(str(big), specs[-1], work / "big", args.workers)
            rows.append(row | {"run": f"stdlib x{args.repeat}"})
            show(row, f"stdlib x{args.repeat} (JSONL)")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    big_rows = [r for r in rows if r["run"].startswith("stdlib x")]
    if big_rows:
        verdict = "within" if big_rows[0]["peak_rss"] <= RSS_LIMIT else "OVER"
        print(f"peak RSS x{args.repeat}: {big_rows[0]['peak_rss'] / 1e9:.2f} GB ({verdict} the 1.5 GB target)")
    for row in rows:
        if row["run"].startswith("stdlib fitted"):
            verdict = "meets" if row["bytes_per_s"] >= BPE_TARGET else "is BELOW"
            print(f"BPE prepare ({row['run']}) {row['bytes_per_s'] / 1e6:.2f} MB/s end to end {verdict} the 20 MB/s target"
                  f" ({row['bytes_per_cpu_s'] / 1e6:.2f} MB per CPU-second; x2 bounds an idle 2-core machine)")
    if args.json:
        Path(args.json).write_text(json.dumps({"workers": args.workers, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
