"""The sandbox: hangs, huge allocations, child processes, deletions and network use fail cleanly and leave nothing behind."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil
import pytest

from proxylm.evaluate.sandbox import Outcome, SandboxLimits, run_program, run_programs

FAST = SandboxLimits(timeout_s=3.0)
ISOLATION = [pytest.param(True, id="namespaces-if-available"), pytest.param(False, id="process-group-only")]


def test_a_correct_program_passes_and_a_failing_assert_fails():
    assert run_program("assert sum([1, 2]) == 3\n", FAST).passed
    result = run_program("assert 1 == 2, 'one is not two'\n", FAST)
    assert result.outcome is Outcome.FAILED
    assert result.detail == "AssertionError: one is not two"


@pytest.mark.parametrize("loop", ["while True:\n    pass\n", "import itertools\nsum(itertools.repeat(1))\n"], ids=["python", "inside-c"])
def test_an_infinite_loop_times_out_on_cpu_time(loop):
    limits = SandboxLimits(timeout_s=1.0, wall_timeout_s=30.0)  # a loaded machine slows the wall clock, not the verdict
    result = run_program(loop, limits)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.detail == "used up its 1 s of CPU time"
    assert result.seconds < limits.wall_timeout_s + 1


def test_a_program_that_sleeps_times_out_on_wall_clock_time():
    limits = SandboxLimits(timeout_s=0.5)
    result = run_program("import time\ntime.sleep(60)\n", limits)
    assert result.outcome is Outcome.TIMED_OUT
    assert "wall-clock" in result.detail
    assert result.seconds < limits.wall_timeout_s + 1


def test_a_50_gb_allocation_fails_cleanly():
    result = run_program("data = bytearray(50 * 2**30)\n", FAST)
    assert result.outcome is Outcome.FAILED
    assert "MemoryError" in result.detail
    assert run_program("assert True\n", FAST).passed  # and the next program runs normally


@pytest.mark.parametrize("isolate", ISOLATION)
@pytest.mark.parametrize("parent", ["exits", "hangs"])
def test_no_child_process_outlives_its_sample(tmp_path, isolate, parent):
    pid_file = tmp_path / "pids.txt"
    # os.fork is disabled by the guard; a determined program can still fork through libc
    program = f"""
import ctypes, os, time
libc = ctypes.CDLL(None)
for _ in range(50):
    if libc.fork() == 0:
        with open({str(pid_file)!r}, "a") as fh:
            fh.write(os.readlink("/proc/self") + "\\n")  # the pid as the test's namespace sees it
        time.sleep(120)
        os._exit(0)
while len(open({str(pid_file)!r}).read().split()) < 50:
    time.sleep(0.02)
{"while True: time.sleep(1)" if parent == "hangs" else ""}
"""
    limits = SandboxLimits(timeout_s=1.5 if parent == "hangs" else 10.0, isolate=isolate)  # hangs: 4.5 s wall clock
    result = run_program(program, limits)
    ended = time.time()
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 50, "the children did not start"
    assert not result.passed
    if parent == "exits":
        assert result.detail == "left child processes running"
    else:
        assert result.outcome is Outcome.TIMED_OUT
    time.sleep(0.2)
    survivors = [pid for pid in pids if _alive_since_before(pid, ended)]
    assert survivors == []


def _alive_since_before(pid: int, moment: float) -> bool:
    """True if `pid` is a live (non-zombie) process created before `moment` (so not a recycled pid)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() < moment
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    "attempt",
    [
        "import os; os.remove(SENTINEL)",
        "import os; os.unlink(SENTINEL)",
        "import pathlib; pathlib.Path(SENTINEL).unlink()",
        "import shutil; shutil.rmtree(DIRECTORY)",
        "import os; os.system('rm -rf ' + DIRECTORY)",
        "import subprocess; subprocess.run(['rm', '-rf', DIRECTORY])",
        "import os; os.posix_spawnp('rm', ['rm', '-rf', DIRECTORY], dict(os.environ))",
    ],
)
def test_deleting_a_file_outside_the_scratch_dir_fails(tmp_path, attempt):
    directory = tmp_path / "keep"
    directory.mkdir()
    sentinel = directory / "sentinel.txt"
    sentinel.write_text("still here")
    program = f"SENTINEL = {str(sentinel)!r}\nDIRECTORY = {str(directory)!r}\n{attempt}\n"
    result = run_program(program, FAST)
    time.sleep(0.1)
    assert result.outcome is Outcome.FAILED
    assert sentinel.read_text() == "still here"


def test_the_scratch_directory_is_removed_afterwards(tmp_path):
    record = tmp_path / "scratch.txt"
    program = f"import os\nopen('made_here.txt', 'w').write('x')\nopen({str(record)!r}, 'w').write(os.environ['TMPDIR'])\n"
    assert run_program(program, FAST).passed
    scratch = Path(record.read_text())
    assert scratch.name.startswith("proxylm-sandbox-")
    assert not scratch.exists()


@pytest.mark.parametrize("isolate", ISOLATION)
def test_the_network_cannot_be_reached(isolate):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
        result = run_program(program, SandboxLimits(timeout_s=3.0, isolate=isolate))
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()
    assert result.outcome is Outcome.FAILED


@pytest.mark.parametrize("exit_call", ["import os; os._exit(0)", "import sys; sys.exit(0)", "exit()"])
def test_leaving_early_is_not_a_pass(exit_call):
    result = run_program(f"{exit_call}\nraise AssertionError('never reached')\n", FAST)
    assert result.outcome is Outcome.FAILED


def test_output_is_swallowed_and_large_files_are_refused():
    assert run_program("print('x' * 10**6)\nimport sys\nsys.stderr.write('y' * 10**6)\n", FAST).passed
    result = run_program("open('big.bin', 'wb').write(b'0' * (64 * 2**20))\n", FAST)
    assert result.outcome is Outcome.FAILED


def test_many_programs_run_in_parallel_and_keep_their_order():
    sources = [f"assert {i} % 3 != 0\n" for i in range(8)]
    results = run_programs(sources, FAST, workers=2)
    assert [r.passed for r in results] == [i % 3 != 0 for i in range(8)]


def test_limits_are_validated():
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="256 MiB"):
        SandboxLimits(memory_bytes=1000)
    with pytest.raises(ValueError, match="wall_timeout_s"):
        SandboxLimits(wall_timeout_s=-1)
    assert SandboxLimits(timeout_s=2).wall_timeout_s == 6
