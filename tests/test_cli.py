import argparse
import importlib
import subprocess
import sys

import pytest

from proxylm.cli import COMMANDS, build_parser, main, run_guarded
from proxylm.errors import UserError


def _subcommand(parser: argparse.ArgumentParser, word: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[word]


def test_every_listed_command_is_wired():
    parser = build_parser()
    for words, (module, _) in COMMANDS.items():
        command = parser
        for word in words:
            command = _subcommand(command, word)
        assert command.get_default("_run") is importlib.import_module(f"proxylm.commands.{module}").run, words


def test_a_missing_file_is_one_line_with_status_2(capsys, tmp_path):
    missing = tmp_path / "nowhere.yaml"
    assert run_guarded(lambda: missing.read_text()) == 2
    assert capsys.readouterr().err.strip() == f"proxylm: error: file not found: {missing}"


def test_an_interrupt_exits_130_without_a_traceback(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert run_guarded(interrupted) == 130
    assert capsys.readouterr().err.strip() == "proxylm: interrupted"


def test_user_errors_are_one_line_with_status_2(capsys):
    def fail():
        raise UserError("data.shards: runs/x has no manifest.json")

    assert run_guarded(fail) == 2
    err = capsys.readouterr().err
    assert err.strip() == "proxylm: error: data.shards: runs/x has no manifest.json"


def test_unknown_command_is_an_argparse_error():
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_help_is_fast_and_imports_no_torch():
    code = "import sys; from proxylm.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
