"""One module per CLI command: add_arguments(parser) and run(args) -> int."""

import argparse


def positive_int(text: str) -> int:
    """argparse type for counts and sizes that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
