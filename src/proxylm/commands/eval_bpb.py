"""`proxylm eval bpb`: bits per raw byte of a checkpoint on any corpus.

    proxylm eval bpb --ckpt CKPT --corpus SRC [--context N] [--stride M] [--json FILE]
    proxylm eval bpb --ckpt CKPT --corpus stdlib --limit 50 --view compressed    # diagnostic

The view defaults to what the checkpoint was trained on (raw view between sentinels; a vanilla
byte or token model without them), so byte, proxy and token models report the same figure.
"""

from __future__ import annotations

import argparse
import sys

from proxylm.commands import positive_int
from proxylm.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint, checkpoints directory or run directory")
    parser.add_argument("--corpus", required=True, help="JSONL file or glob, source files, parquet, `stdlib`, or hf:PATH[:split]")
    parser.add_argument("--field", default="text", help="JSONL / parquet field holding the text (default: text)")
    parser.add_argument("--limit", type=positive_int, metavar="K", help="only the first K documents")
    parser.add_argument("--context", type=positive_int, help="window length in ids (default: the model's max_seq_len)")
    parser.add_argument("--stride", type=positive_int, help="ids the window moves by (default: half the window)")
    parser.add_argument(
        "--view", choices=["raw", "compressed", "tokens", "bytes"],
        help="how documents are fed (default: the checkpoint's training view); compressed is a diagnostic",
    )
    parser.add_argument("--shards", metavar="DIR", help="take the compressor from this preparation (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward (default: 8)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--json", metavar="FILE", help="write the result (overall and per document) here")


def run(args: argparse.Namespace) -> int:
    from proxylm.data.corpus import open_corpus
    from proxylm.evaluate.bpb import EvalCheckpoint, View, evaluate_bpb
    from proxylm.evaluate.generate import default_device
    from proxylm.io import atomic_write_json

    ckpt = EvalCheckpoint.load(args.ckpt, args.device or default_device())
    view = View(args.view) if args.view else ckpt.view
    compressor = ckpt.compressor(args.shards) if view.needs_compressor else None
    corpus = open_corpus(args.corpus, field=args.field, limit=args.limit)
    result = evaluate_bpb(
        ckpt.model, corpus, args.context, args.stride, view=view, compressor=compressor,
        batch_size=args.batch_size, progress=True,
    )
    for reason, count in corpus.skipped_counts().items():
        if count:
            result.skipped[reason] = result.skipped.get(reason, 0) + count
    if not result.documents:
        raise UserError(f"--corpus {args.corpus}: no document to score (skipped: {result.skipped or 'none'})")
    summary = {"ckpt": str(ckpt.path), "corpus": args.corpus, **result.to_dict()}
    print(
        f"bpb {result.bpb:.4f} over {len(result.documents)} documents, {result.raw_bytes} bytes "
        f"({view.value} view, context {result.context}, stride {result.stride})"
    )
    if result.skipped:
        print(f"skipped: {result.skipped}", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, summary)
    return 0
