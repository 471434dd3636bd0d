"""A MongoDB-wire-protocol server, FerretDB 1.24, built from the Go module proxy.

MongoDB itself is in no registry this project may use, but FerretDB is a Go module: a small
wrapper (../ferretdb/main.go) embeds it, `go build` makes one static binary, and that binary is
cached under a key of the wrapper's sources. Its gaps (no transactions, change streams, TTL
indexes, $lookup) are documented in ENGINEERING.md and shape the services' design. It stores
on PostgreSQL (kefu_local.postgres) where that can run, else on SQLite files.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kefu_local import paths
from kefu_local.process import InfraError, start_detached, tracked_pid

FERRETDB_VERSION = "1.24.2"
GO_BUILD_TIMEOUT_SECONDS = 1800
PROGRESS_EVERY_SECONDS = 15.0

Log = Callable[[str], None]


def ensure_binary(log: Log = print) -> Path:
    """The FerretDB wrapper binary, built on first use (and after its sources change)."""
    binary = paths.ferretdb_binary()
    if binary.exists():
        return binary
    with paths.file_lock(paths.cache_dir() / "ferretdb-build.lock"):
        if binary.exists():  # another process built it while we waited for the lock
            return binary
        _build(binary, log)
        # Older builds are dead weight once their sources changed; a running one keeps its
        # inode until it exits, so deleting it is safe.
        for old in binary.parent.glob("ferretdb-*"):
            if old != binary and not old.name.endswith(".partial"):
                old.unlink(missing_ok=True)
    return binary


def _build(binary: Path, log: Log) -> None:
    go = shutil.which("go")
    if go is None:
        raise InfraError(
            "no `go` found: install Go 1.24+ to build FerretDB, or point MONGODB_URI at a MongoDB"
        )
    log(
        f"building FerretDB {FERRETDB_VERSION[:4]} from the Go module proxy "
        "(first run, a few minutes)..."
    )
    binary.parent.mkdir(parents=True, exist_ok=True)
    scratch = binary.with_name(binary.name + ".partial")
    env = dict(os.environ)
    # Pure Go (modernc.org/sqlite): no C toolchain needed, and the binary runs anywhere.
    env["CGO_ENABLED"] = "0"
    # go.mod and go.sum are committed complete: building must neither edit them nor resolve
    # versions anew, so every machine builds exactly the same dependencies.
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=readonly").strip()
    argv = [go, "build", "-v", "-trimpath", "-ldflags=-s -w", "-o", str(scratch), "."]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=paths.FERRETDB_SRC,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # go prints one line per module downloaded and per package compiled: too many to echo,
    # too useful to swallow. Summarise every few seconds; keep the tail for a failure report.
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    downloaded = compiled = 0
    recent: list[str] = []
    last_report = started
    while True:
        if time.monotonic() - started > GO_BUILD_TIMEOUT_SECONDS:
            proc.kill()
            raise InfraError(f"go build did not finish in {GO_BUILD_TIMEOUT_SECONDS} s")
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            recent = [*recent[-39:], line]
            if line.startswith("go: downloading"):
                downloaded += 1
            elif not line.startswith("go:") and " " not in line:
                compiled += 1
        if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
            last_report = time.monotonic()
            log(
                f"  ... {time.monotonic() - started:.0f} s: {downloaded} modules downloaded, "
                f"{compiled} packages compiled"
            )
    if proc.wait() != 0 or not scratch.exists():
        scratch.unlink(missing_ok=True)
        raise InfraError("go build of the FerretDB wrapper failed:\n" + "\n".join(recent))
    scratch.rename(binary)
    log(
        f"built FerretDB in {time.monotonic() - started:.0f} s ({downloaded} modules downloaded, "
        f"{compiled} packages compiled) into {binary}"
    )


@dataclass(frozen=True)
class FerretDBTLS:
    """A TLS listener beside the plain one (which the readiness check keeps using). With a
    ca_file FerretDB requires client certificates that chain to it (mutual TLS)."""

    port: int
    cert_file: Path
    key_file: Path
    ca_file: Path | None = None

    def arguments(self, host: str) -> list[str]:
        argv = [
            "-listen-tls",
            f"{host}:{self.port}",
            "-listen-tls-cert-file",
            str(self.cert_file),
            "-listen-tls-key-file",
            str(self.key_file),
        ]
        if self.ca_file is not None:
            argv += ["-listen-tls-ca-file", str(self.ca_file)]
        return argv


@dataclass(frozen=True)
class FerretDBNode:
    """One FerretDB process whose log (and SQLite files, on that backend) live under state_dir."""

    state_dir: Path
    port: int
    host: str = "127.0.0.1"
    tls: FerretDBTLS | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "ferretdb"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "ferretdb.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / "ferretdb.log"

    def running_pid(self) -> int | None:
        # Each profile listens on its own port, so the address identifies our server in `ps`.
        return tracked_pid(self.pid_file, f"-listen {self.host}:{self.port}")

    def start(self, binary: Path, postgresql_url: str | None = None, log: Log = print) -> int:
        """Start on the PostgreSQL at postgresql_url, or without one on SQLite files."""
        argv = [str(binary), "-listen", f"{self.host}:{self.port}"]
        if self.tls is not None:
            argv += self.tls.arguments(self.host)
        if postgresql_url is not None:
            argv += ["-postgresql-url", postgresql_url]
            backend = "PostgreSQL"
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            argv += ["-data", str(self.data_dir)]
            backend = "SQLite"
        pid = start_detached(argv, log_file=self.log_file, pid_file=self.pid_file)
        tls = f" and TLS {self.host}:{self.tls.port}" if self.tls is not None else ""
        log(f"started FerretDB {FERRETDB_VERSION} on {backend} (pid {pid}) on {self.uri}{tls}")
        return pid
