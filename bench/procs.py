"""The benchmark's own infrastructure: its Kafka/FerretDB profile, topics, service processes, and
what each process costs (peak RSS, CPU seconds) read from /proc."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kefu_local.infra import LocalInfra

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STORE_SERVERS = ("ferretdb", "postgresql")
_STARTED: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_leftovers() -> None:
    """If the benchmark dies half-way, the service processes it started die with it."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat_fields(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (0 if it is gone)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a server that forks a process per connection (PostgreSQL): its own, its
    exited children's (cutime, cstime) and its live children's."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    ticks = sum(int(v) for v in fields[11:15])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            child = _stat_fields(int(entry.name))
            if child and child[1] == str(pid):
                ticks += sum(int(v) for v in child[11:15])
    return ticks / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak resident set since start), in KiB."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores, from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) / CLOCK_TICKS for v in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    total = sum(values[:8])
    return total - idle, total


@dataclass
class CpuWindow:
    """CPU used by each watched process (and the whole machine) between start() and stop()."""

    pids: Mapping[str, int]
    # Entries counted with their children (PostgreSQL's backends).
    trees: frozenset[str] = frozenset({"postgresql"})
    _start: dict[str, float] = field(default_factory=dict)
    _machine: tuple[float, float] = (0.0, 0.0)
    _t0: float = 0.0

    def start(self) -> CpuWindow:
        self._start = {name: self._cpu(name, pid) for name, pid in self.pids.items()}
        self._machine = machine_cpu_seconds()
        self._t0 = time.monotonic()
        return self

    def _cpu(self, name: str, pid: int) -> float:
        return tree_cpu_seconds(pid) if name in self.trees else cpu_seconds(pid)

    def stop(self) -> dict[str, float]:
        """Share of one core each process used (1.0 = one core busy), plus ``machine_busy``: the
        share of all cores that anything on the machine used (other engineers' tests too)."""
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        out = {
            name: round((self._cpu(name, pid) - self._start.get(name, 0.0)) / elapsed, 3)
            for name, pid in self.pids.items()
        }
        busy, total = machine_cpu_seconds()
        d_total = max(total - self._machine[1], 1e-6)
        out["machine_busy"] = round((busy - self._machine[0]) / d_total, 3)
        return out


@dataclass
class ServiceProcess:
    """One kefu service process (``python -m kefu_<service>``), as it runs in production."""

    instance: str
    service: str
    env: Mapping[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.instance}.log"

    def start(self) -> None:
        prefix = f"KEFU_{self.service.upper()}_"
        env = {
            **os.environ,
            **self.env,
            f"{prefix}HTTP_PORT": str(self.port),
            f"{prefix}INSTANCE_ID": self.instance,
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"kefu_{self.service}"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _STARTED.append(self.process)

    async def wait_ready(self, timeout: float = 90.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"{self.instance} exited; see {self.log_file}")
                try:
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if loop.time() > deadline:
                    raise RuntimeError(f"{self.instance} not ready after {timeout:.0f}s")
                await asyncio.sleep(0.3)

    def pause(self) -> None:
        """SIGSTOP: the process holds still (no scans, no consuming) until ``resume``."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)

    def memory(self) -> dict[str, int]:
        return memory_kib(self.pid) if self.process else {}

    def stop(self, grace: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def create_topics(bootstrap: str, topics: Mapping[str, int]) -> None:
    """Create topics with the given partition counts (replication 1: one broker)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, num_partitions=n, replication_factor=1)
            for name, n in topics.items()
            if name not in existing
        ]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()
    await asyncio.sleep(0.5)  # let the single broker elect leaders before the first produce


async def delete_topics(bootstrap: str, prefix: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return len(names)
    finally:
        await admin.close()


# -- the servers every benchmark command runs on ----------------------------------------------


def add_infra_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-infra", action="store_true", help="leave Kafka/FerretDB running")
    parser.add_argument("--infra-profile", dest="infra_profile", default="bench")
    parser.add_argument("--kafka-port", type=int, default=39092)
    parser.add_argument("--controller-port", type=int, default=39093)
    parser.add_argument("--mongo-port", type=int, default=27047)


def bench_infra(args: argparse.Namespace, **options: Any) -> LocalInfra:
    """The profile named by ``add_infra_arguments``'s options (``infra.up`` starts it)."""
    return LocalInfra(
        args.infra_profile,
        kafka_port=args.kafka_port,
        controller_port=args.controller_port,
        mongo_port=args.mongo_port,
        **options,
    )


def server_pids(infra: LocalInfra) -> dict[str, int]:
    """Kafka's, FerretDB's and (on PostgreSQL) PostgreSQL's pid, for ``CpuWindow``."""
    pids = {"kafka": infra.kafka.running_pid() or 0, "ferretdb": infra.ferretdb.running_pid() or 0}
    if (postgres_pid := infra.postgres.running_pid()) is not None:
        pids["postgresql"] = postgres_pid
    return pids


async def stop_infra(args: argparse.Namespace, infra: LocalInfra) -> None:
    """Stop what this run started, unless ``--keep-infra``."""
    if not args.keep_infra and infra.started:
        await asyncio.to_thread(infra.down, infra.started)
