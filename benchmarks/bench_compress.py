"""Compressor figures on the built-in corpus (the stdlib): ratio, encode and decode MB/s.

    .venv/bin/python benchmarks/bench_compress.py [--test-mb 8] [--fit-mb 16] [--vocab 8192] [--json FILE]

- Held-out measurement: a hash sample of about `--test-mb` of the stdlib is encoded and decoded;
  trainable compressors are fitted on up to `--fit-mb` of the other documents' train split.
- Ratio = raw bytes / symbols. Encode uses `encode_many` where a compressor has it (as
  `prepare` does; the BPE tokenizer spreads a batch over threads), decode is per document.
- Encode is also given per CPU-second of the process (all threads), which other people's load
  on a shared machine disturbs much less than wall-clock MB/s.
- Every decode is checked against the original bytes: a lossy result stops the benchmark.
- bpe-bytes reuses the fitted bpe tokenizer file, so it is not fitted twice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from proxylm import compress
from proxylm.data.corpus import Split, hash_unit, iter_split, open_corpus, sample_documents

SPECS = ["raw", "gzip", "bpe", "bpe-bytes", "bpe-bytes:order=gray", "doublebyte", "halfbyte", "doublebit", "bit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-mb", type=float, default=8.0, help="held-out megabytes to encode and decode")
    parser.add_argument("--fit-mb", type=float, default=16.0, help="megabytes trainable compressors are fitted on")
    parser.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary")
    parser.add_argument("--json", help="write the figures as JSON")
    args = parser.parse_args()

    corpus = open_corpus("stdlib")
    test_share = args.test_mb * 1e6 / 31.5e6  # the stdlib holds about 31.5 MB of .py files
    test = [d.data for d in corpus if hash_unit(d.id, "bench") < test_share]
    rest = (d for d in iter_split(corpus, Split.TRAIN, 0.02) if hash_unit(d.id, "bench") >= test_share)
    fit_docs = [d.data for d in sample_documents(rest, salt="fit", max_bytes=int(args.fit_mb * 1e6))]
    total = sum(map(len, test))
    print(f"stdlib (Python {platform.python_version()}): {len(test)} held-out documents, {total / 1e6:.1f} MB;"
          f" fit sample {sum(map(len, fit_docs)) / 1e6:.1f} MB; {os.cpu_count()} CPUs")
    print(f"load average {os.getloadavg()[0]:.1f}; MB/s falls when others share the CPUs, MB per CPU-second (all threads) much less")
    print(f"{'compressor':<34} {'ratio':>6} {'encode MB/s':>12} {'enc MB/CPU-s':>12} {'decode MB/s':>12} {'alphabet':>9} {'fit s':>6}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in SPECS:
            row = measure(spec, args.vocab, test, fit_docs, Path(tmp))
            rows.append(row)
            print(f"{row['compressor']:<34} {row['ratio']:>6.3f} {row['encode_mb_s']:>12.2f} {row['encode_mb_per_cpu_s']:>12.2f}"
                  f" {row['decode_mb_s']:>12.2f}"
                  f" {row['alphabet_size']:>9,} {row['fit_s']:>6.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"corpus": "stdlib", "test_bytes": total, "results": rows}, indent=2))


def measure(spec: str, vocab: int, test: list[bytes], fit_docs: list[bytes], tmp: Path) -> dict:
    name, _ = compress.parse_spec(spec)
    extra = {}
    if name == "bpe":
        extra = {"vocab": vocab}
    elif name == "bpe-bytes":
        extra = {"path": str(tmp / "tokenizer.json")}  # the tokenizer the bpe row fitted
    compressor = compress.build(spec, **extra)
    fit_s = 0.0
    if not compressor.ready:
        t0 = time.perf_counter()
        compressor.fit(fit_docs)
        fit_s = time.perf_counter() - t0
        compressor.save(tmp)
    total = sum(map(len, test))
    t0, c0 = time.perf_counter(), time.process_time()
    if hasattr(compressor, "encode_many"):
        encoded = compressor.encode_many(test)
    else:
        encoded = [compressor.encode(d) for d in test]
    encode_s, encode_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    decoded = [compressor.decode(s) for s in encoded]
    decode_s = time.perf_counter() - t0
    lossy = sum(a != b for a, b in zip(decoded, test))
    if lossy:
        raise SystemExit(f"{spec}: {lossy} documents did not decode to their bytes")
    symbols = sum(len(s) for s in encoded)
    label = spec
    if name in ("bpe", "bpe-bytes"):
        params = spec.partition(":")[2]
        label = f"{name}:vocab={vocab}" + (f",{params}" if params else "")
    return {
        "compressor": label,
        "ratio": total / symbols,
        "encode_mb_s": total / 1e6 / encode_s,
        "encode_mb_per_cpu_s": total / 1e6 / max(encode_cpu, 1e-9),
        "decode_mb_s": total / 1e6 / decode_s,
        "alphabet_size": compressor.alphabet_size,
        "fit_s": fit_s,
    }


if __name__ == "__main__":
    main()
