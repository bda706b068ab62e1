"""Progress bars are for a person at a terminal: a command whose stderr is a file or a pipe (a
log, CI, `nohup`) writes its summary lines without progress-bar frames."""

from __future__ import annotations

import io
import sys

from conftest import write_stdlib_jsonl

from proxylm.cli import main


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def prepare(tmp_path, name: str) -> int:
    corpus = write_stdlib_jsonl(tmp_path / "docs.jsonl", files=6, chars=800)
    return main(["prepare", "--corpus", str(corpus), "--compressor", "gzip", "--out", str(tmp_path / name)])


def test_prepare_logged_to_a_file_has_no_progress_frames(tmp_path, capfd):
    assert prepare(tmp_path, "shards") == 0
    out, err = capfd.readouterr()
    assert "shards written" in out + err
    assert "\r" not in out + err


def test_prepare_on_a_terminal_shows_its_progress_bar(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert prepare(tmp_path, "shards") == 0
    assert "prepare:" in terminal.getvalue() and "\r" in terminal.getvalue()
