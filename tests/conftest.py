"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run faster without thread start-up, and the suite shares 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_stdlib_jsonl(path, files: int, chars: int):
    """The first `chars` characters of the first `files` standard-library modules, as JSONL at `path`."""
    import json
    import os
    from pathlib import Path

    with Path(path).open("w") as fh:
        for source in sorted(Path(os.__file__).parent.glob("*.py"))[:files]:
            fh.write(json.dumps({"text": source.read_text(errors="replace")[:chars]}) + "\n")
    return path
