"""The `proxylm` command: a thin dispatcher over command modules.

Each command lives in `proxylm.commands.<module>` with two functions:
`add_arguments(parser)` and `run(args) -> int`. Errors a user can act on (UserError and its
subclasses, missing files) print as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# (command words) -> (module under proxylm.commands, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("prepare",): ("prepare", "compress a corpus into training shards"),
    ("probe", "stability"): ("stability", "edit-distance stability of compressors under deletions"),
    ("probe", "translate"): ("translate", "how well a model turns a compressed view into raw bytes"),
    ("train",): ("train", "train a model from a YAML config with key=value overrides"),
    ("eval", "bpb"): ("eval_bpb", "bits per raw byte on a corpus"),
    ("eval", "code"): ("eval_code", "HumanEval / MBPP pass@k in a sandbox"),
    ("eval", "robust"): ("eval_robust", "ReCode-style robustness of pass@k and BPB"),
    ("eval", "harness"): ("eval_harness", "lm-evaluation-harness tasks on raw bytes (proxylm[lm-eval])"),
    ("generate",): ("generate", "sample raw bytes from a checkpoint"),
    ("export",): ("export", "export a checkpoint as a transformers model"),
    ("study",): ("study", "compute-matched comparison of training arms"),
}


def _available(module: str) -> bool:
    return importlib.util.find_spec(f"proxylm.commands.{module}") is not None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxylm", description="Byte-level language models trained with proxy compression.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for words, (module, help_text) in COMMANDS.items():
        if not _available(module):
            continue
        if len(words) == 1:
            cmd = sub.add_parser(words[0], help=help_text, description=help_text)
        else:
            if words[0] not in groups:
                group = sub.add_parser(words[0], help=f"{words[0]} commands")
                groups[words[0]] = group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            cmd = groups[words[0]].add_parser(words[1], help=help_text, description=help_text)
        mod = importlib.import_module(f"proxylm.commands.{module}")
        mod.add_arguments(cmd)
        cmd.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args._run(args))


def run_guarded(action) -> int:
    """Run `action()`; errors a user can act on become one line on stderr and exit status 2."""
    from proxylm.errors import UserError

    try:
        return int(action() or 0)
    except UserError as exc:
        print(f"proxylm: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"proxylm: error: file not found: {exc.filename or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("proxylm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
