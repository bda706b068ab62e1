"""Neural proxy benchmark: compression ratio, coding speed, peak memory, collisions, exactness.

    python benchmarks/bench_neural.py [--model PATH] [--mb 2] [--workers 2] [--json FILE]
    python benchmarks/bench_neural.py --make-corpus [--corpus stdlib] [--out runs/data/stdlib-windows.jsonl]

The ratio and collisions are measured on the standard library's validation split (never seen
by the compressor LM, which trains on chunks of the train split); the timings on that split
topped up with train-split documents to --mb megabytes. Without --model the default compressor is used:
runs/neural-compressor-tiny, trained first (a few minutes) if it is missing:
`--make-corpus` then `proxylm train configs/neural-compressor-tiny.yaml`.

Reported: bytes per symbol (the manifest's `ratio`) and the ratio in bits (8 bytes / 16-bit
symbols), window lengths, MB/s with one process and with `--workers` processes, `proxylm prepare`
of the same documents end to end under `torchrun` with `--ranks` processes (MB/s and MB per
CPU-second of the whole process tree, process start and model loading included), the peak RSS of
the whole process tree (sampled every 50 ms), the collision statistics of
proxylm.probes.collisions, and an exact decode of a few documents with their side information.
`--json` writes the same figures; the headline key is `bytes_per_s` (the multi-process speed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil

from proxylm import compress
from proxylm.compress.byte_model import write_training_chunks
from proxylm.data.corpus import Split, open_corpus, split_of
from proxylm.io import atomic_write_json
from proxylm.probes.collisions import collision_stats, split_windows

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "runs" / "neural-compressor-tiny"
DEFAULT_CORPUS = ROOT / "runs" / "data" / "stdlib-windows.jsonl"
TRAIN_CONFIG = ROOT / "configs" / "neural-compressor-tiny.yaml"
VAL_FRACTION = 0.02  # prepare's default split


def make_corpus(source: str, out: Path, seed: int = 0) -> int:
    """Write the compressor LM's training corpus: the train split of `source` cut into chunks as
    long as the default coder's rows, 8..64 bytes (proxylm.compress.byte_model.training_chunks), one
    JSONL record per chunk."""
    train = ((doc.id, doc.data) for doc in open_corpus(source) if split_of(doc.id, VAL_FRACTION) is Split.TRAIN)
    return write_training_chunks(train, out, np.random.default_rng(seed))


def train_default_model() -> None:
    if not DEFAULT_CORPUS.is_file():
        print(f"writing the compressor LM's corpus {DEFAULT_CORPUS} ...", flush=True)
        make_corpus("stdlib", DEFAULT_CORPUS)
    print(f"training the default compressor LM ({TRAIN_CONFIG.name}); a few minutes ...", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-m", "proxylm", "train", str(TRAIN_CONFIG)], cwd=ROOT, env=env, check=True)


def benchmark_docs(megabytes: float) -> tuple[list[bytes], int]:
    """Documents for the timings: the validation split (the compressor LM never saw it), topped
    up with train-split documents to `megabytes`; also how many of them are validation ones."""
    val, train = [], []
    for doc in open_corpus("stdlib"):
        (val if split_of(doc.id, VAL_FRACTION) is Split.VAL else train).append(doc.data)
    docs, total = list(val), sum(map(len, val))
    for data in train:
        if total >= megabytes * 1e6:
            break
        docs.append(data)
        total += len(data)
    return docs, len(val)


@contextmanager
def peak_rss(result: dict[str, float]):
    """Sample the RSS of this process and all its children; store the peak sum in result['bytes']."""
    me, stop = psutil.Process(), threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                continue
            result["bytes"] = max(result.get("bytes", 0), rss)
            stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def timed_encode(spec: str, docs: list[bytes], workers: int) -> tuple[list, float, float, float]:
    """(results, wall seconds, CPU seconds of this process, peak RSS bytes) of encoding `docs`
    with `workers` processes, after a warm-up that starts the workers and loads the model. On a
    shared machine the CPU seconds of a one-process run tell the speed of a whole free core."""
    memory: dict[str, float] = {}
    with peak_rss(memory):
        compressor = compress.build(spec, workers=workers)
        sizes = np.cumsum([len(d) for d in docs])
        compressor.encode_many_with_side(docs[: int(np.searchsorted(sizes, 200_000)) + 1])  # starts the workers
        start, cpu_start = time.perf_counter(), time.process_time()
        results = compressor.encode_many_with_side(docs)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        compressor.close()
    return results, seconds, cpu_seconds, memory.get("bytes", 0.0)


def timed_prepare(spec: str, docs: list[bytes], ranks: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process tree) of `torchrun --nproc_per_node ranks -m proxylm
    prepare` on `docs` written as JSONL."""
    work = Path(tempfile.mkdtemp(prefix="proxylm-bench-neural-"))
    try:
        corpus = work / "docs.jsonl"
        with open(corpus, "w") as fh:
            for doc in docs:
                fh.write(json.dumps({"text": doc.decode("utf-8")}) + "\n")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                   "-m", "proxylm", "prepare", "--corpus", str(corpus), "--compressor", spec, "--out", str(work / "out")]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help=f"compressor LM (default {DEFAULT_MODEL.relative_to(ROOT)}, trained if missing)")
    parser.add_argument("--window-bits", type=int, default=16)
    parser.add_argument("--mb", type=float, default=2.0, help="megabytes of validation documents (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel run (default 2)")
    parser.add_argument("--ranks", type=int, default=2, help="torchrun processes for the prepare run (0: skip; default 2)")
    parser.add_argument("--json", default=None, metavar="FILE")
    parser.add_argument("--make-corpus", action="store_true", help="only write the compressor LM's training corpus")
    parser.add_argument("--corpus", default="stdlib", help="source for --make-corpus (default stdlib)")
    parser.add_argument("--out", default=str(DEFAULT_CORPUS), help="output of --make-corpus")
    args = parser.parse_args()

    if args.make_corpus:
        print(f"wrote {make_corpus(args.corpus, Path(args.out)):,} chunks to {args.out}")
        return 0
    if args.model is None:
        if not (DEFAULT_MODEL / "checkpoints").is_dir():
            train_default_model()
        args.model = str(DEFAULT_MODEL)
    spec = f"neural:model={args.model},window_bits={args.window_bits}"
    docs, n_val = benchmark_docs(args.mb)
    raw = sum(map(len, docs))
    print(f"{spec}\n{len(docs)} documents, {raw / 1e6:.2f} MB for the timings; the {n_val} of the stdlib "
          "validation split for the ratio and collisions", flush=True)

    results, one_s, one_cpu_s, one_rss = timed_encode(spec, docs, workers=1)
    _, many_s, _, many_rss = timed_encode(spec, docs, workers=args.workers)
    prepare_s, prepare_cpu_s = timed_prepare(spec, docs, args.ranks) if args.ranks else (float("nan"), float("nan"))
    docs, results = docs[:n_val], results[:n_val]  # held-out documents only from here on
    val_bytes = sum(map(len, docs))
    symbols = sum(len(s) for s, _ in results)
    counts = np.concatenate([side[side > 0] for _, side in results])
    compressor = compress.build(spec)
    exact = all(compressor.decode(s, side) == doc for doc, (s, side) in list(zip(docs, results))[:3])
    collisions = collision_stats(w for doc, (s, side) in zip(docs, results) for w in split_windows(doc, s, side))
    report = {
        "spec": spec,
        "model": compressor.config()["model"],
        "documents": len(docs),
        "raw_bytes": val_bytes,
        "symbols": symbols,
        "ratio": val_bytes / symbols,
        "bit_ratio": 8 * val_bytes / (args.window_bits * symbols),
        "window_bytes_mean": float(counts.mean()),
        "window_bytes_max": int(counts.max()),
        "timed_bytes": raw,
        "bytes_per_s": raw / many_s,
        "bytes_per_s_one_process": raw / one_s,
        "bytes_per_cpu_s": raw / one_cpu_s,
        "prepare_ranks": args.ranks,
        "prepare_bytes_per_s": raw / prepare_s,
        "prepare_bytes_per_cpu_s": raw / prepare_cpu_s,
        "load_average": os.getloadavg()[0],
        "workers": args.workers,
        "peak_rss_bytes": many_rss,
        "peak_rss_bytes_one_process": one_rss,
        "exact_decode": exact,
        "collisions": collisions.to_dict(),
        "cpu": f"{psutil.cpu_count(logical=True)} logical CPUs",
    }
    print(
        f"ratio {report['ratio']:.3f} bytes/symbol ({report['bit_ratio']:.3f}x in bits), "
        f"windows of {report['window_bytes_mean']:.2f} bytes on average (max {report['window_bytes_max']})\n"
        f"speed {raw / one_s / 1e6:.3f} MB/s with 1 process ({raw / one_cpu_s / 1e6:.3f} MB per CPU second), "
        f"{raw / many_s / 1e6:.3f} MB/s with {args.workers}; load average {os.getloadavg()[0]:.1f}; "
        f"prepare under torchrun x{args.ranks}: {raw / prepare_s / 1e6:.3f} MB/s ({raw / prepare_cpu_s / 1e6:.3f} MB per CPU second, "
        f"target 0.5 MB/s on 2 idle cores {'met' if raw / prepare_s >= 0.5e6 else 'MISSED'}); "
        f"peak RSS {one_rss / 2**20:.0f} MiB and {many_rss / 2**20:.0f} MiB\n"
        f"collisions: {collisions.colliding_window_share:.1%} of windows share their symbol with another chunk; "
        f"{collisions.chunks_per_colliding_symbol:.2f} chunks per shared symbol; common prefix "
        f"{collisions.common_prefix_share:.1%}; whitespace-only tails {collisions.whitespace_tail_share:.1%}\n"
        f"exact decode with side information: {exact}"
    )
    for example in collisions.examples[:3]:
        print(f"  symbol {example['symbol']}: {example['chunks']}")
    if args.json:
        atomic_write_json(args.json, report)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
