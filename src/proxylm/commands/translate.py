"""`proxylm probe translate`: how well a proxy model turns a compressed view into raw bytes, and back.

    proxylm probe translate --ckpt CKPT --corpus SRC [--split val|train|all] [--limit K] [--max-doc-bytes N] [--json FILE]

Headline: exact-match rate and byte accuracy of the raw bytes written greedily after
`<compressed> symbols </compressed> <raw>`, and the BPB of those bytes given the compressed
view (beside the plain raw-view BPB of the same documents); the reverse direction is reported
under `raw_to_compressed`. The compressor is the one the checkpoint's shards were prepared with.
Documents are the held-out (val) split of --corpus unless --split says otherwise (see eval bpb).
"""

from __future__ import annotations

import argparse
import sys

from proxylm.commands import add_split_argument, positive_int
from proxylm.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint, checkpoints directory or run directory")
    parser.add_argument("--corpus", required=True,
                        help="JSONL file or glob, source files, parquet, `stdlib`, hf:PATH[:split], or a prepared directory")
    parser.add_argument("--field", default="text", help="JSONL / parquet field holding the text (default: text)")
    add_split_argument(parser)
    parser.add_argument("--limit", type=positive_int, default=50, metavar="K",
                        help="documents of the split to probe (default: 50)")
    parser.add_argument("--max-doc-bytes", type=positive_int, default=256, help="crop documents to this many bytes (default: 256)")
    parser.add_argument("--shards", metavar="DIR", help="take the compressor from this preparation (default: the checkpoint's)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--json", metavar="FILE", help="write the result here")


def run(args: argparse.Namespace) -> int:
    from proxylm.evaluate.bpb import EvalCheckpoint, View
    from proxylm.evaluate.generate import default_device
    from proxylm.evaluate.heldout import open_eval_documents
    from proxylm.evaluate.translate import probe_translation
    from proxylm.io import atomic_write_json

    ckpt = EvalCheckpoint.load(args.ckpt, args.device or default_device())
    if ckpt.view is not View.RAW:
        raise UserError(f"{ckpt.path} was trained in vanilla mode (one view, no sentinels): there is no translation to probe")
    compressor = ckpt.compressor(args.shards)
    corpus = open_eval_documents(args.corpus, args.split, ckpt.val_fraction(args.shards), args.limit, args.field)
    report = probe_translation(ckpt.model, corpus, compressor, max_doc_bytes=args.max_doc_bytes, progress=True)
    for reason, count in corpus.skipped_counts().items():
        if count:
            report.skipped[reason] = report.skipped.get(reason, 0) + count
    if not report.forward.documents:
        raise corpus.nothing_to_score(report.skipped)
    summary = {"ckpt": str(ckpt.path), "corpus": args.corpus, "compressor": compressor.name, **corpus.describe(),
               **report.to_dict()}
    forward, reverse = report.forward, report.reverse
    print(f"compressed -> raw: exact {forward.exact_match:.3f}, byte accuracy {forward.accuracy:.3f} "
          f"(written {forward.written_share:.0%}), bpb {forward.bpb:.4f} (plain raw view: {report.raw_bpb:.4f})")
    print(f"raw -> compressed: exact {reverse.exact_match:.3f}, symbol accuracy {reverse.accuracy:.3f} "
          f"(written {reverse.written_share:.0%}), bits per raw byte {reverse.bpb:.4f}   "
          f"({forward.documents} documents of split {args.split.value})")
    if report.skipped:
        print(f"skipped: {report.skipped}", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, summary)
    return 0
