"""`proxylm export`: a checkpoint as a transformers model folder (`trust_remote_code`, loads offline).

    proxylm export --ckpt CKPT --out DIR
    # then: AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True, local_files_only=True)
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint, checkpoints directory or run directory")
    parser.add_argument("--out", required=True, help="folder to write (created; existing files are replaced)")


def run(args: argparse.Namespace) -> int:
    from proxylm.evaluate.bpb import resolve_checkpoint
    from proxylm.export_hf import export_hf

    out = export_hf(resolve_checkpoint(args.ckpt), args.out)
    print(f"exported {out}: load with AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)")
    return 0
