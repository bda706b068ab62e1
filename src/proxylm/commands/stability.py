"""`proxylm probe stability --corpus SRC --compressors SPEC[,SPEC...] [--docs N] [--seed S] [--json FILE]`.

Prints one table, most stable compressor first; `--json` writes the same figures
(headline key: `normalized_levenshtein`, one value per compressor spec).
"""

from __future__ import annotations

import argparse

from proxylm.data.corpus import DEFAULT_MAX_DOC_BYTES, CorpusKind


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, metavar="SRC", help="JSONL file or glob, directory or glob of source files, parquet file, `stdlib`, or hf:PATH[:split] (a local Hugging Face dataset)")
    parser.add_argument(
        "--compressors", required=True, action="append", metavar="SPEC[,SPEC...]",
        help="compressor specs, comma-separated (a spec's own key=value parameters stay with it); may repeat",
    )
    parser.add_argument("--docs", type=int, default=200, metavar="N", help="documents to probe (default 200)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="chooses documents and deletions (default 0)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as one JSON object")
    parser.add_argument("--deletion", type=float, default=0.1, metavar="F", help="share of characters deleted (default 0.1)")
    parser.add_argument("--max-bytes", type=int, default=16384, metavar="N", help="cut documents to their first N bytes (default 16384)")
    parser.add_argument("--format", choices=[k.value for k in CorpusKind], default="auto", help="how to read SRC (default: from its suffixes)")
    parser.add_argument("--field", default="text", help="JSONL/parquet field holding the text (default text)")
    parser.add_argument("--max-doc-bytes", type=int, default=DEFAULT_MAX_DOC_BYTES, metavar="N", help="skip larger documents (default 1 MiB)")
    parser.add_argument("--fit-mb", type=float, default=32.0, metavar="MB", help="trainable compressors are fitted on this much of the train split (default 32)")


def run(args: argparse.Namespace) -> int:
    from proxylm.data.corpus import CorpusConfig
    from proxylm.io import atomic_write_json
    from proxylm.compress import split_specs
    from proxylm.probes.stability import StabilityConfig, probe_stability

    config = StabilityConfig(
        corpus=CorpusConfig(source=args.corpus, kind=CorpusKind(args.format), field=args.field, max_doc_bytes=args.max_doc_bytes),
        compressors=[spec for group in args.compressors for spec in split_specs(group)],
        docs=args.docs,
        seed=args.seed,
        deletion=args.deletion,
        max_bytes=args.max_bytes,
        fit_bytes=int(args.fit_mb * 1e6),
    )
    report = probe_stability(config, progress=True)
    print(report.table())
    if args.json:
        atomic_write_json(args.json, report.to_json())
    return 0
