"""`proxylm eval bpb`: bits per raw byte of a checkpoint on the held-out documents of any corpus.

    proxylm eval bpb --ckpt CKPT --corpus SRC [--split val|train|all] [--context N] [--stride M] [--json FILE]
    proxylm eval bpb --ckpt CKPT --corpus stdlib --limit 50 --view compressed    # diagnostic

Only the val split is scored unless --split says otherwise: the hash split `prepare` uses, with
the val_fraction of the checkpoint's preparation, so `--corpus stdlib` scores what the model never
trained on. --corpus may also name a prepared directory (its own splits).

The view defaults to what the checkpoint was trained on (raw view between sentinels; a vanilla
byte or token model without them), so byte, proxy and token models report the same figure.
"""

from __future__ import annotations

import argparse
import sys

from proxylm.commands import add_split_argument, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint, checkpoints directory or run directory")
    parser.add_argument("--corpus", required=True,
                        help="JSONL file or glob, source files, parquet, `stdlib`, hf:PATH[:split], or a prepared directory")
    parser.add_argument("--field", default="text", help="JSONL / parquet field holding the text (default: text)")
    add_split_argument(parser)
    parser.add_argument("--limit", type=positive_int, metavar="K", help="only the first K documents of the split")
    parser.add_argument("--context", type=positive_int, help="window length in ids (default: the longest span the model was trained on, else its max_seq_len)")
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
    from proxylm.evaluate.bpb import EvalCheckpoint, View, evaluate_bpb
    from proxylm.evaluate.generate import default_device
    from proxylm.evaluate.heldout import open_eval_documents
    from proxylm.io import atomic_write_json

    ckpt = EvalCheckpoint.load(args.ckpt, args.device or default_device())
    view = View(args.view) if args.view else ckpt.view
    compressor = ckpt.compressor(args.shards) if view.needs_compressor else None
    corpus = open_eval_documents(args.corpus, args.split, ckpt.val_fraction(args.shards), args.limit, args.field)
    result = evaluate_bpb(
        ckpt.model, corpus, args.context, args.stride, view=view, compressor=compressor,
        batch_size=args.batch_size, progress=True,
    )
    for reason, count in corpus.skipped_counts().items():
        if count:
            result.skipped[reason] = result.skipped.get(reason, 0) + count
    if not result.documents:
        raise corpus.nothing_to_score(result.skipped)
    summary = {"ckpt": str(ckpt.path), "corpus": args.corpus, **corpus.describe(), **result.to_dict()}
    print(
        f"bpb {result.bpb:.4f} over {len(result.documents)} documents of split {args.split.value}, {result.raw_bytes} bytes "
        f"({view.value} view, context {result.context}, stride {result.stride})"
    )
    if result.skipped:
        print(f"skipped: {result.skipped}", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, summary)
    return 0
