"""`proxylm generate`: sample raw bytes from a checkpoint, streamed to the terminal.

    proxylm generate --ckpt CKPT --prompt "def fib(n):" [--max-bytes N] [--temperature T] [--top-p P] [--seed S]
    proxylm generate --ckpt CKPT --prompt "def fib(n):" --n 16 --temperature 0.8 --json out.json

The continuation is printed as it is decoded (the prompt is not repeated); bytes that are not
valid UTF-8 print as U+FFFD, and a sequence cut short at the end is dropped. Speed goes to
stderr. Greedy decoding is speculative when the model has extra heads (same output, fewer
forwards); --no-speculative decodes one byte per forward. `--n N` decodes N samples in one
batch (sample i seeded by (seed, i), as `eval code` does) and prints each after a `--- sample i`
line. `--json` reports `bytes` (over all samples), `seconds`, `bytes_per_s` and `texts`.
"""

from __future__ import annotations

import argparse
import codecs
import sys
import time
from pathlib import Path

from proxylm.commands import positive_int
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
    parser.add_argument("--n", type=positive_int, default=1, help="samples of the prompt, decoded as one batch (default: 1)")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop before this text (repeatable)")
    parser.add_argument("--no-speculative", action="store_true", help="one byte per forward even with extra heads")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--json", metavar="FILE", help="write the text and speed here")


def run(args: argparse.Namespace) -> int:
    from proxylm.evaluate.generate import Generator

    prompt = read_prompt(args)
    generator = Generator.from_checkpoint(args.ckpt, device=args.device, speculative=not args.no_speculative)
    start = time.perf_counter()
    gens = stream_one(generator, prompt, args) if args.n == 1 else batch(generator, prompt, args)
    seconds = time.perf_counter() - start
    total = sum(len(g.output) for g in gens)
    forwards = max(g.stats.forwards for g in gens)
    rate = total / seconds if seconds > 0 else float("inf")
    reasons = sorted({g.stop_reason.value for g in gens})
    print(
        f"{total} bytes in {seconds:.2f} s ({rate:.0f} bytes/s, {total / max(forwards, 1):.2f} bytes per forward"
        f"{f', {args.n} samples' if args.n > 1 else ''}), stopped by {', '.join(reasons)}",
        file=sys.stderr,
    )
    if args.json:
        write_json(args.json, gens, seconds, forwards)
    return 0


def stream_one(generator, prompt: bytes, args: argparse.Namespace) -> list:
    from proxylm.evaluate.generate import Generation, prompt_bytes

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    result: list[Generation] = []
    for chunk in generator.stream(
        prompt, args.max_bytes, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        stop=[prompt_bytes(s) for s in args.stop], result=result,
    ):
        sys.stdout.write(decoder.decode(chunk))
        sys.stdout.flush()
    sys.stdout.write("\n")  # an incomplete trailing sequence stays in the decoder: dropped
    return result


def batch(generator, prompt: bytes, args: argparse.Namespace) -> list:
    from proxylm.evaluate.generate import prompt_bytes, sample_seeds

    gens = generator.generate_batch(
        [prompt] * args.n, args.max_bytes, temperature=args.temperature, top_p=args.top_p,
        seeds=sample_seeds(args.seed, args.n), stop=[prompt_bytes(s) for s in args.stop],
    )
    for i, g in enumerate(gens):
        sys.stdout.write(f"--- sample {i}\n{g.text}\n")
    return gens


def write_json(path: str, gens: list, seconds: float, forwards: int) -> None:
    from proxylm.io import atomic_write_json

    total = sum(len(g.output) for g in gens)
    report = {
        "bytes": total, "seconds": seconds, "bytes_per_s": total / seconds if seconds > 0 else None,
        "texts": [g.text for g in gens], "forwards": forwards, "bytes_per_forward": total / max(forwards, 1),
        "stop_reasons": [g.stop_reason.value for g in gens],
    }
    if len(gens) == 1:
        report.update(text=gens[0].text, stop_reason=gens[0].stop_reason.value)
    atomic_write_json(path, report)


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
