"""One module per CLI command: add_arguments(parser) and run(args) -> int."""

import argparse


def positive_int(text: str) -> int:
    """argparse type for counts and sizes that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_split_argument(parser: argparse.ArgumentParser) -> None:
    """`--split val|train|all` for an evaluation command: held-out documents unless told otherwise."""
    from proxylm.evaluate.heldout import EvalSplit

    parser.add_argument(
        "--split", type=EvalSplit, choices=list(EvalSplit), default=EvalSplit.VAL, metavar="{val,train,all}",
        help="documents to score: val (held out by prepare's hash split; the default), train, or all",
    )
