"""PostgreSQL as FerretDB's storage: the local store that uses its indexes.

FerretDB 1.24 on SQLite scans a collection for every command, even an exact `_id` lookup, so
each read costs in proportion to the collection (39 ms at 1k documents, 319 ms at 10k, measured
for issue #12). On PostgreSQL FerretDB pushes equality filters down, but as `@>` on an
expression its own btree indexes cannot serve, so it scanned too (11 ms at 10k); the cluster
therefore gets GIN twins of those indexes and custom plans (data/ferretdb_gin_twins.sql): a
lookup by `_id` took 1 ms at 10k alone, 3 / 4 / 9 ms at 1k / 10k / 100k in the benchmark. So
the runner puts FerretDB on a PostgreSQL cluster of its own per profile, and keeps SQLite as
the fallback where PostgreSQL cannot run (`KEFU_FERRETDB_BACKEND=sqlite` forces it).

PostgreSQL refuses to run as root; under root the cluster belongs to the `postgres` system
user that Debian's package creates, which must be able to reach the state dir. `./kefu`
installs that package when it is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kefu_local.process import InfraError, start_detached, tracked_pid

Log = Callable[[str], None]

SERVER_USER_UNDER_ROOT = "postgres"
# FerretDB 1.24's update holds one pooled connection while it waits for a second; with its
# default pool of 50, 50 concurrent updates (the full-size crash test's six services) took every
# connection and FerretDB hung for good, answering not even `ping` (goroutine dump, issue #13).
FERRETDB_POOL_MAX_CONNS = 400
INDEX_TUNING_SQL = Path(__file__).resolve().parent / "data" / "ferretdb_gin_twins.sql"

# A development and test cluster: durable against a killed process (what the fault tests do),
# not against a machine crash, which is what fsync buys and what no local run needs. Everything
# on loopback TCP; no Unix socket, whose path length the state dir could overflow.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Room for FerretDB's pool (FERRETDB_POOL_MAX_CONNS) and a few clients of our own.
    "max_connections": "450",
    # FerretDB binds a filter's field name as a parameter; only a custom plan sees it as the
    # constant that matches an index expression (see data/ferretdb_gin_twins.sql).
    "plan_cache_mode": "force_custom_plan",
    "log_min_messages": "warning",
}


TOOLS = ("initdb", "postgres", "psql")


def find_bindir() -> Path | None:
    """The directory with `initdb`, `postgres` and `psql`: `$KEFU_POSTGRES_BIN`, Debian's
    versioned directories (newest first), else the one `initdb` is in on the PATH."""
    explicit = os.environ.get("KEFU_POSTGRES_BIN")
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    candidates = (
        [Path(explicit)]
        if explicit
        else [*debian, *([Path(on_path).resolve().parent] if on_path else [])]
    )
    for candidate in candidates:
        if all((candidate / tool).exists() for tool in TOOLS):
            return candidate
    return None


def server_user() -> pwd.struct_passwd | None:
    """Whom the server runs as: ourselves, or under root the `postgres` system user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER_UNDER_ROOT)
    except KeyError:
        raise InfraError(
            f"running as root, PostgreSQL needs the {SERVER_USER_UNDER_ROOT!r} user, which "
            "Debian's postgresql package creates; or set KEFU_FERRETDB_BACKEND=sqlite"
        ) from None


@dataclass(frozen=True)
class PostgresNode:
    """One PostgreSQL cluster whose data and log live under state_dir, on loopback TCP."""

    state_dir: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return (
            f"postgres://postgres@{self.host}:{self.port}/postgres"
            f"?pool_max_conns={FERRETDB_POOL_MAX_CONNS}"
        )

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "postgresql"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "postgresql.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / "postgresql.log"

    def running_pid(self) -> int | None:
        return tracked_pid(self.pid_file, f"-D {self.data_dir}")

    def reachable_by_server_user(self) -> bool:
        """Under root, whether the `postgres` user can enter the state dir (a checkout in a
        private home directory is out of its reach)."""
        user = server_user()
        if user is None:
            return True
        self.state_dir.mkdir(parents=True, exist_ok=True)
        probe = subprocess.run(
            ["test", "-x", str(self.state_dir)], user=user.pw_uid, group=user.pw_gid, check=False
        )
        return probe.returncode == 0

    def start(self, bindir: Path, log: Log = print, timeout: float = 60.0) -> int:
        """Create the cluster on first use, start it and wait until it accepts connections."""
        user = server_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._init(bindir, user, log)
        argv = [str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for name, value in SERVER_SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        pid = start_detached(
            argv,
            log_file=self.log_file,
            pid_file=self.pid_file,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
        )
        self._tune_indexes(bindir, time.monotonic() + timeout)
        log(f"started PostgreSQL (pid {pid}) on {self.host}:{self.port} for FerretDB")
        return pid

    def _tune_indexes(self, bindir: Path, deadline: float) -> None:
        """Install the trigger that lets FerretDB's lookups use an index (idempotent), as soon
        as the new server accepts connections: this is also the wait for it."""
        argv = [str(bindir / "psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres"]
        argv += ["-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(INDEX_TUNING_SQL)]
        while True:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode == 0:
                return
            if self.running_pid() is None:
                raise InfraError(f"PostgreSQL exited during startup; see {self.log_file}")
            # 2: no connection yet (not listening, or "the database system is starting up").
            if done.returncode != 2 or time.monotonic() > deadline:
                raise InfraError(f"tuning FerretDB's PostgreSQL indexes failed:\n{done.stderr}")
            time.sleep(0.2)

    def _init(self, bindir: Path, user: pwd.struct_passwd | None, log: Log) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a half-made cluster from an interrupted first run
        self.data_dir.mkdir(parents=True, mode=0o700)
        if user is not None:
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        done = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",  # loopback only, a throwaway cluster
                "--encoding=UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
        if done.returncode != 0:
            raise InfraError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        log(f"created a PostgreSQL cluster in {self.data_dir}")
