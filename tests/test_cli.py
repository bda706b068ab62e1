import subprocess
import sys

import pytest

from proxylm.cli import COMMANDS, build_parser, main, run_guarded
from proxylm.errors import UserError


def test_every_listed_command_is_wired():
    parser = build_parser()
    help_text = parser.format_help()
    for words in COMMANDS:
        assert words[0] in help_text


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
