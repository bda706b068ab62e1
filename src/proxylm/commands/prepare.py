"""`proxylm prepare --corpus SRC --compressor SPEC --out DIR [--strict] [--workers N] [--executor datatrove --tasks N]`.

Prints a summary (documents, bytes, symbols, ratio, per split, skipped by reason, MB/s) after a
progress bar; the full record is DIR/manifest.json. `--executor datatrove` runs the prepare as N
datatrove tasks (`--workers` of them at a time) and merges their shards under one manifest;
under `torchrun` each rank prepares a slice of the documents (see proxylm.data.prepare).
"""

from __future__ import annotations

import argparse
import enum
import os

from proxylm.data.corpus import DEFAULT_MAX_DOC_BYTES, DEFAULT_MAX_PIECE_BYTES, CorpusKind
from proxylm.errors import UserError


class Executor(enum.Enum):
    LOCAL = "local"  # this process and --workers encoding processes
    DATATROVE = "datatrove"  # --tasks datatrove tasks on this machine (LocalPipelineExecutor)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, metavar="SRC", help="JSONL file or glob, directory or glob of source files, parquet file, `stdlib`, or hf:PATH[:split] (a local Hugging Face dataset)")
    parser.add_argument("--compressor", required=True, metavar="SPEC", help="compressor spec, e.g. gzip, bpe:vocab=8192, halfbyte")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (re-running resumes and reuses finished shards)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad document instead of skipping and counting it")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="encoding processes, or datatrove tasks at a time (default 1)")
    parser.add_argument("--executor", choices=[e.value for e in Executor], default="local",
                        help="local: one process and its workers; datatrove: --tasks tasks (pip install 'proxylm[datatrove]')")
    parser.add_argument("--tasks", type=int, default=None, metavar="N", help="datatrove tasks, each writing its own shards (default: --workers)")
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
    from proxylm.data.prepare_tasks import run_prepare_ranks

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
    executor = Executor(args.executor)
    if args.tasks is not None and executor is not Executor.DATATROVE:
        raise UserError("--tasks needs --executor datatrove")
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if executor is Executor.DATATROVE:
        if torchrun:
            raise UserError("--executor datatrove runs its own tasks; launch it without torchrun")
        manifest = _run_datatrove(config, args.tasks or args.workers)
    elif torchrun:
        manifest = run_prepare_ranks(config, progress=os.environ.get("RANK") == "0")
    else:
        manifest = run_prepare(config, progress=True)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(summary(manifest, args.out))
    return 0


def _run_datatrove(config, tasks: int) -> dict:
    try:
        from proxylm.data.datatrove_step import run_local
    except ImportError as exc:
        raise UserError(f"--executor datatrove needs datatrove ({exc}); pip install 'proxylm[datatrove]'") from None
    return run_local(config, tasks, progress=True)


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
        f"  {run['seconds']:.1f} s, {run['bytes_per_s'] / 1e6:.1f} MB/s with {run['workers']} worker(s)"
        + (f" over {run['tasks']} {run['executor']} tasks;" if "tasks" in run else ";") +
        f" shards written {run['shards_written']}, reused {run['shards_reused']}"
    )
    return "\n".join(lines)
