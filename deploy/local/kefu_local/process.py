"""Detached server processes tracked by pid files.

The servers must outlive the command that started them (`infra up` returns, the broker keeps
running), so they get their own session and a pid file in the state dir; every later command
finds them through that file. A pid alone can be reused by an unrelated process after a reboot,
so "alive" also checks that the command line still names our state dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class InfraError(RuntimeError):
    """The local infrastructure could not be fetched, built, started or reached."""


# Children started by this Python process. Keeping the Popen objects lets us reap them (a dead
# child we never waited for is a zombie that still answers kill(pid, 0)) and keeps Python from
# warning that a subprocess was garbage-collected while running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def start_detached(
    argv: Sequence[str],
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: int | None = None,
    group: int | None = None,
) -> int:
    """Start argv in its own session (Ctrl-C in the terminal must not reach it), append its
    stdout/stderr to log_file, write its pid to pid_file and return the pid. `user` and `group`
    (ids) switch to another account first, for servers that refuse to run as root."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {argv[0]}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
    _CHILDREN[proc.pid] = proc
    # Write-then-rename: a reader never sees a half-written pid file.
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(pid_file)
    return proc.pid


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _cmdline(proc: Path) -> str:
    """The command line. Read right after a start it was seen empty (FerretDB, from the runner's
    own process), so an empty one is read again a few times before it counts."""
    for _ in range(5):
        raw = (proc / "cmdline").read_bytes()
        if raw:
            break
        time.sleep(0.02)
    return raw.replace(b"\0", b" ").decode(errors="replace")


def is_alive(pid: int, marker: str | None = None) -> bool:
    """True if pid runs and is not a zombie; with a marker, its command line must contain it."""
    child = _CHILDREN.get(pid)
    if child is not None:
        # Our own child: poll() knows exactly. Its /proc entry may not: right after the start,
        # FerretDB's binary showed an empty command line for a moment (read mid-exec), which
        # made a running server look gone ("exited during startup") and left it orphaned.
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: certainly not ours
    proc = Path("/proc") / str(pid)
    if not proc.exists():
        return True  # no procfs (macOS): kill(pid, 0) is all we can check
    try:
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = _cmdline(proc)
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return marker is None or marker in cmdline


def tracked_pid(pid_file: Path, marker: str) -> int | None:
    """The pid recorded in pid_file if that process is still ours and running."""
    pid = read_pid(pid_file)
    if pid is not None and is_alive(pid, marker):
        return pid
    return None


def stop(
    pids: Sequence[int], grace_seconds: float = 20.0, signal_number: int = signal.SIGTERM
) -> None:
    """Signal every pid (SIGTERM unless told otherwise), wait up to grace_seconds for all of
    them together, then SIGKILL."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_number)
    deadline = time.monotonic() + grace_seconds
    remaining = list(pids)
    while remaining and time.monotonic() < deadline:
        remaining = [pid for pid in remaining if is_alive(pid)]
        if remaining:
            time.sleep(0.1)
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages (reads only the end of big files)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no log file at {path})"
    return "\n".join(text.splitlines()[-lines:])
