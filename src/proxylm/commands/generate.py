"""`proxylm generate`: sample raw bytes from a checkpoint, streamed to the terminal.

    proxylm generate --ckpt CKPT --prompt "def fib(n):" [--max-bytes N] [--temperature T] [--top-p P] [--seed S]

The continuation is printed as it is decoded (the prompt is not repeated); bytes that are not
valid UTF-8 print as U+FFFD, and a sequence cut short at the end is dropped. Speed goes to
stderr. Greedy decoding is speculative when the model has extra heads (same output, fewer
forwards); --no-speculative decodes one byte per forward.
"""

from __future__ import annotations

import argparse
import codecs
import sys
import time
from pathlib import Path

from proxylm.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint, checkpoints directory or run directory")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text to continue (UTF-8)")
    prompt.add_argument("--prompt-file", metavar="FILE", help="continue the bytes of this file (any bytes)")
    parser.add_argument("--max-bytes", type=int, default=256, help="most bytes to write (default: 256)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop before this text (repeatable)")
    parser.add_argument("--no-speculative", action="store_true", help="one byte per forward even with extra heads")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--json", metavar="FILE", help="write the text and speed here")


def run(args: argparse.Namespace) -> int:
    from proxylm.evaluate.generate import Generation, Generator, prompt_bytes, to_text
    from proxylm.io import atomic_write_json

    prompt = read_prompt(args)
    generator = Generator.from_checkpoint(args.ckpt, device=args.device, speculative=not args.no_speculative)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    result: list[Generation] = []
    start = time.perf_counter()
    for chunk in generator.stream(
        prompt, args.max_bytes, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        stop=[prompt_bytes(s) for s in args.stop], result=result,
    ):
        sys.stdout.write(decoder.decode(chunk))
        sys.stdout.flush()
    seconds = time.perf_counter() - start
    sys.stdout.write("\n")  # an incomplete trailing sequence stays in the decoder: dropped
    gen = result[0]
    rate = len(gen.output) / seconds if seconds > 0 else float("inf")
    per_forward = len(gen.output) / max(gen.stats.forwards, 1)
    print(
        f"{len(gen.output)} bytes in {seconds:.2f} s ({rate:.0f} bytes/s, {per_forward:.2f} bytes per forward), "
        f"stopped by {gen.stop_reason.value}",
        file=sys.stderr,
    )
    if args.json:
        atomic_write_json(args.json, {
            "text": to_text(gen.output), "bytes": len(gen.output), "bytes_per_s": rate, "seconds": seconds,
            "forwards": gen.stats.forwards, "bytes_per_forward": per_forward, "stop_reason": gen.stop_reason.value,
        })
    return 0


def read_prompt(args: argparse.Namespace) -> bytes:
    from proxylm.evaluate.generate import prompt_bytes

    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise UserError(f"--prompt-file not found: {path}")
        return path.read_bytes()
    try:
        return prompt_bytes(args.prompt)
    except UserError as exc:
        raise UserError(f"--prompt: {exc}") from None
