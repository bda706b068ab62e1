"""`proxylm eval robust`: ReCode-style robustness of a checkpoint: robust pass@k and BPB under perturbations.

    proxylm eval robust --ckpt CKPT --task humaneval [--kinds func_name,syntax] [--seeds 5] [--limit K] [--json FILE]
    proxylm eval robust --ckpt CKPT --no-code --corpus SRC [--split val|train|all] [--docs 50]   # BPB deltas only

Code: greedy completions of the nominal prompts and of each family's perturbed prompts (seeds
0..N-1), graded in the sandbox; `robust_pass@1` is the worst case over seeds, averaged over
families. Text: with --corpus, the BPB of clean and perturbed documents (`bpb_delta`), on the
held-out (val) split of the corpus unless --split says otherwise (see eval bpb).
"""

from __future__ import annotations

import argparse
import sys
import time

from proxylm.commands import add_split_argument, positive_int
from proxylm.commands.eval_code import add_unsafe_flag, warn_if_unsafe
from proxylm.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint, checkpoints directory or run directory")
    parser.add_argument("--kinds", type=kinds, default=None, metavar="KIND[,KIND...]",
                        help="perturbation families: func_name, format, syntax, docstring (default: all)")
    parser.add_argument("--seeds", type=positive_int, default=5, help="perturbation seeds per family (default: 5)")
    # --- code ---
    parser.add_argument("--task", default="humaneval", help="humaneval | mbpp, optionally NAME:PATH (default: humaneval)")
    parser.add_argument("--limit", type=positive_int, metavar="K", help="only the first K problems")
    parser.add_argument("--max-bytes", type=positive_int, default=512, help="longest completion in bytes (default: 512)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per program (default: 5)")
    parser.add_argument("--workers", type=positive_int, default=2, help="sandboxes running at once (default: 2)")
    add_unsafe_flag(parser)
    parser.add_argument("--no-code", action="store_true", help="skip the code benchmark (BPB deltas only)")
    # --- text ---
    parser.add_argument("--corpus", help="also report BPB deltas on these documents (JSONL, files, parquet, stdlib, "
                                         "a prepared directory)")
    add_split_argument(parser)
    parser.add_argument("--docs", type=positive_int, default=50, help="documents of the split to perturb (default: 50)")
    parser.add_argument("--bpb-seeds", type=positive_int, default=2, help="perturbation seeds per family for BPB (default: 2)")
    parser.add_argument("--context", type=positive_int, help="BPB window length in ids (default: max_seq_len)")
    parser.add_argument("--stride", type=positive_int, help="BPB window stride (default: half the window)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--json", metavar="FILE", help="write the results here")


def run(args: argparse.Namespace) -> int:
    from proxylm.evaluate.bpb import EvalCheckpoint
    from proxylm.evaluate.generate import Generator, default_device
    from proxylm.evaluate.robust import ALL_KINDS
    from proxylm.io import atomic_write_json

    if args.no_code and not args.corpus:
        raise UserError("--no-code leaves nothing to evaluate: give --corpus SRC for BPB deltas")
    ckpt = EvalCheckpoint.load(args.ckpt, args.device or default_device())
    families = args.kinds or list(ALL_KINDS)
    start = time.perf_counter()
    results: dict = {"ckpt": str(ckpt.path), "kinds_evaluated": [k.value for k in families]}
    if not args.no_code:
        results.update(robust_code_results(args, Generator(ckpt.model), families))
        print(f"pass@1 {results['pass@1']:.4f}  robust_pass@1 {results['robust_pass@1']:.4f}  "
              f"robust_drop@1 {results['robust_drop@1']:.4f}  ({results['problems']} problems, {args.seeds} seeds)")
        for name, metrics in results["kinds"].items():
            print(f"  {name:<10} robust_pass@1 {metrics['robust_pass@1']:.4f}  robust_drop@1 {metrics['robust_drop@1']:.4f}")
    if args.corpus:
        results["text"] = robust_text_results(args, ckpt, families)
        text = results["text"]
        print(f"bpb {text['bpb']:.4f} clean, mean delta {text['bpb_delta']:+.4f} over {text['documents']} documents "
              f"of split {text['split']}")
        for name, metrics in text["kinds"].items():
            print(f"  {name:<10} bpb_delta {metrics['bpb_delta']:+.4f}  worst {metrics['worst_bpb_delta']:+.4f}")
    results["seconds"] = round(time.perf_counter() - start, 2)
    if args.json:
        atomic_write_json(args.json, results)
    return 0


def robust_code_results(args: argparse.Namespace, generator, families) -> dict:
    from proxylm.evaluate import tasks
    from proxylm.evaluate.robust import robust_code
    from proxylm.evaluate.sandbox import SandboxLimits, sandbox_isolation

    problems = tasks.load_tasks(args.task, limit=args.limit)
    try:
        limits = SandboxLimits(timeout_s=args.timeout, unsafe_no_sandbox=args.unsafe_no_sandbox)
    except ValueError as exc:
        raise UserError(f"--timeout: {exc}") from None
    isolation = sandbox_isolation(limits)  # refuse before generating anything
    warn_if_unsafe(isolation)

    def complete(prompts: list[str]) -> list[str]:
        return generator.complete(prompts, max_bytes=args.max_bytes, stop=list(tasks.STOP_SEQUENCES))

    results = robust_code(problems, complete, families, range(args.seeds), limits=limits, workers=args.workers, progress=True)
    return {**results, "isolation": isolation.value}


def robust_text_results(args: argparse.Namespace, ckpt, families) -> dict:
    from proxylm.evaluate.heldout import open_eval_documents
    from proxylm.evaluate.robust import robust_bpb

    corpus = open_eval_documents(args.corpus, args.split, ckpt.val_fraction(), args.docs)
    docs = list(corpus)
    if not docs:
        raise corpus.nothing_to_score({k: v for k, v in corpus.skipped_counts().items() if v})
    view = ckpt.view
    compressor = ckpt.compressor() if view.needs_compressor else None
    text = robust_bpb(ckpt.model, docs, families, range(args.bpb_seeds), args.context, args.stride, view, compressor)
    skipped = {k: v for k, v in corpus.skipped_counts().items() if v}
    if skipped:
        print(f"skipped: {skipped}", file=sys.stderr)
    return {**corpus.describe(), **text, "skipped": skipped}


def kinds(text: str) -> list:
    from proxylm.evaluate.perturb import PerturbKind

    names = [k.strip() for k in text.split(",") if k.strip()]
    try:
        return [PerturbKind(n) for n in names]
    except ValueError:
        choices = ", ".join(k.value for k in PerturbKind)
        raise argparse.ArgumentTypeError(f"unknown perturbation in {text!r}; choose from {choices}") from None
