"""`proxylm prepare --corpus SRC --compressor SPEC --out DIR [--strict] [--workers N]`.

Prints a summary (documents, bytes, symbols, ratio, per split, skipped by reason, MB/s) after a
progress bar; the full record is DIR/manifest.json.
"""

from __future__ import annotations

import argparse

from proxylm.data.corpus import DEFAULT_MAX_DOC_BYTES, DEFAULT_MAX_PIECE_BYTES, CorpusKind


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, metavar="SRC", help="JSONL file or glob, directory or glob of source files, parquet file, `stdlib`, or hf:PATH[:split] (a local Hugging Face dataset)")
    parser.add_argument("--compressor", required=True, metavar="SPEC", help="compressor spec, e.g. gzip, bpe:vocab=8192, halfbyte")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (re-running resumes and reuses finished shards)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad document instead of skipping and counting it")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="encoding processes (default 1)")
    # corpus reading
    parser.add_argument("--format", choices=[k.value for k in CorpusKind], default="auto", help="how to read SRC (default: from its suffixes)")
    parser.add_argument("--field", default="text", help="JSONL/parquet field holding the text (default text)")
    parser.add_argument("--max-doc-bytes", type=int, default=DEFAULT_MAX_DOC_BYTES, metavar="N", help="skip larger documents (default 1 MiB = 1048576)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N usable documents")
    parser.add_argument("--max-piece-bytes", type=int, default=DEFAULT_MAX_PIECE_BYTES, metavar="N",
                        help=f"cut longer documents into pieces of at most N bytes at line ends; 0 keeps them whole (default {DEFAULT_MAX_PIECE_BYTES})")
    # splitting and sharding
    parser.add_argument("--val-fraction", type=float, default=0.02, metavar="F", help="share of documents in the validation split (default 0.02)")
    parser.add_argument("--shard-docs", type=int, default=4096, metavar="N", help="documents per shard at most (default 4096)")
    parser.add_argument("--shard-mb", type=float, default=64.0, metavar="MB", help="raw megabytes per shard at most (default 64)")
    parser.add_argument("--fit-mb", type=float, default=32.0, metavar="MB", help="trainable compressors are fitted on this much of the train split (default 32)")


def run(args: argparse.Namespace) -> int:
    from proxylm.data.corpus import CorpusConfig
    from proxylm.data.prepare import PrepareConfig, run_prepare

    config = PrepareConfig(
        corpus=CorpusConfig(
            source=args.corpus,
            kind=CorpusKind(args.format),
            field=args.field,
            max_doc_bytes=args.max_doc_bytes,
            strict=args.strict,
            limit=args.limit,
        ),
        compressor=args.compressor,
        out=args.out,
        workers=args.workers,
        val_fraction=args.val_fraction,
        shard_docs=args.shard_docs,
        shard_bytes=int(args.shard_mb * 1e6),
        fit_bytes=int(args.fit_mb * 1e6),
        max_piece_bytes=args.max_piece_bytes or None,
    )
    manifest = run_prepare(config, progress=True)
    print(summary(manifest, args.out))
    return 0


def summary(manifest: dict, out: str) -> str:
    run = manifest["run"]
    lines = [
        f"prepared {manifest['corpus']['source']} with {manifest['compressor']['spec']} into {out}",
        f"  documents {manifest['documents']:,} in {manifest['pieces']:,} pieces of <= {manifest['max_piece_bytes'] or 'any'} bytes"
        f"  raw bytes {manifest['raw_bytes']:,}  symbols {manifest['symbols']:,}"
        f"  ratio {manifest['ratio']:.3f}  alphabet {manifest['compressor']['alphabet_size']:,}",
    ]
    for name, split in manifest["splits"].items():
        lines.append(
            f"  {name:<5} {split['documents']:>9,} docs {split['pieces']:>9,} pieces  {split['raw_bytes']:>13,} bytes  {split['symbols']:>13,} symbols"
            f"  {len(split['shards'])} shard(s)"
        )
    fit = manifest["compressor"].get("fit")
    if fit:
        lines.append(f"  {manifest['compressor']['spec']} fitted on {fit['documents']:,} train documents ({fit['bytes'] / 1e6:.1f} MB) in {fit['seconds']:.1f} s")
    skipped = {k: v for k, v in manifest["skipped"].items() if v}
    lines.append("  skipped " + (", ".join(f"{k} {v:,}" for k, v in skipped.items()) if skipped else "none"))
    lines.append(
        f"  {run['seconds']:.1f} s, {run['bytes_per_s'] / 1e6:.1f} MB/s with {run['workers']} worker(s);"
        f" shards written {run['shards_written']}, reused {run['shards_reused']}"
    )
    return "\n".join(lines)
