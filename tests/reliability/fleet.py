"""The five services as real processes on an infrastructure profile of our own.

The reliability tests stop and restart the broker and the store, and SIGKILL services: that
must never touch the test servers other engineers share. So everything here runs on the
``faults`` profile of the local runner (Kafka 29192, controller 29193, FerretDB 27057), each
service as its own ``python -m kefu_<service>`` process, exactly as production runs it.

The ports are below Linux's ephemeral range (32768-60999) on purpose: while a broker is down,
the clients' reconnects pick ephemeral source ports, and one that picks the broker's own port
connects to itself (TCP simultaneous open) and holds it, so the restarted broker cannot bind
("Address already in use"). Measured with 39192 here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kefu_local.infra import Endpoints, InfraError, LocalInfra
from kefu_shared.auth import KeyRing, Role

FAULTS_PROFILE = "faults"
KAFKA_PORT, CONTROLLER_PORT, MONGO_PORT = 29192, 29193, 27057

Log = Callable[[str], None]

# The topics and partition counts production creates (the kefu-kafka-topics Job). Without them
# each service's FastStream creates the topics it subscribes to with one partition, so a
# second instance in a group would idle and never take partitions over.
TOPICS_FILE = Path(__file__).resolve().parents[2] / "deploy/k8s/components/kafka-topics/topics.txt"


def faults_infra(log: Log = print) -> LocalInfra:
    """Kafka and FerretDB of our own, so stopping them disturbs nobody else's tests."""
    return LocalInfra(
        FAULTS_PROFILE,
        kafka_port=KAFKA_PORT,
        controller_port=CONTROLLER_PORT,
        mongo_port=MONGO_PORT,
        log=log,
    )


def stop_component(infra: LocalInfra, name: str, grace: float = 30.0) -> None:
    """Stop Kafka ("kafka") or FerretDB ("mongodb") and wait until it is really gone: the
    runner SIGKILLs after the grace period but does not wait for a process it did not start,
    and a new broker started beside a dying one cannot bind its port."""
    node = infra.kafka if name == "kafka" else infra.ferretdb
    pid = node.running_pid()
    infra.down([name], grace)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        gone = pid is None or not _alive(pid)
        if gone and not _port_open(node.port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} (pid {pid}) did not stop")


def restart_component(infra: LocalInfra, name: str, away_seconds: float = 0.0) -> None:
    stop_component(infra, name)
    time.sleep(away_seconds)
    bring_up(infra)


def bring_up(infra: LocalInfra, attempts: int = 3) -> None:
    """``infra.up()``, again if it gives up too early: on a loaded machine the runner's
    liveness probe can misread a JVM that is still starting as exited, and a second ``up()``
    reuses the process if it does run."""
    for attempt in range(attempts):
        try:
            infra.up()
            return
        except InfraError:
            if attempt == attempts - 1:
                raise
            time.sleep(3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class InstanceSpec:
    """One process: which service, and the settings that make it this instance."""

    name: str
    service: str
    env: Mapping[str, str] = field(default_factory=dict)


# The local runner's layout: inquiry runs twice, chat apart from the other channels.
INSTANCES = (
    InstanceSpec("notifier", "notifier"),
    InstanceSpec("inquiry-chat", "inquiry", {"CHANNELS": "chat"}),
    InstanceSpec("inquiry-other", "inquiry", {"CHANNELS": "phone,email,social,marketplace"}),
    InstanceSpec("orders", "orders"),
    InstanceSpec("aftersales", "aftersales"),
    InstanceSpec("feedback", "feedback"),
)
SERVICES = ("inquiry", "notifier", "orders", "aftersales", "feedback")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(service: str, token: str) -> dict[str, str]:
    """Settings of one service for a reliability run: short polls and backoffs (the machine
    is small and the suite bounded), policies that do not hold notices back, long order
    timers (a reminder must not fire while the run waits for its outcome)."""
    p = f"KEFU_{service.upper()}_"
    common = {
        "MONGODB_DATABASE": f"rel_{token}_{service}",
        "TOPIC_PREFIX": f"rel{token}.",
        "CONSUMER_GROUP": f"rel{token}-{service}",
        "LAG_INTERVAL_SECONDS": "10",
        "OUTBOX_POLL_SECONDS": "0.5",
        "RETRY_ATTEMPTS": "3",
        "RETRY_INITIAL_BACKOFF_SECONDS": "0.05",
        "RETRY_MAX_BACKOFF_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }
    extra = {
        "notifier": {
            "DISPATCH_POLL_SECONDS": "0.5",
            "QUIET_HOURS_CHANNELS": "[]",
            "RATE_LIMIT_PER_CUSTOMER": "1000",
            # A delivery claimed by a process that was killed is free again after this.
            "SEND_LEASE_SECONDS": "10",
            "DELIVERY_INITIAL_BACKOFF_SECONDS": "1",
            "WEBHOOK_DISPATCH_POLL_SECONDS": "1",
        },
        "orders": {
            "FIRST_REMINDER_SECONDS": "20000",
            "LOST_AFTER_SECONDS": "30000",
            "SECOND_REMINDER_SECONDS": "40000",
            "EXPIRE_AFTER_SECONDS": "86400",
            "TIMER_SCAN_SECONDS": "1",
        },
        "feedback": {"QUARTERLY_ROUND_SAMPLE_SIZE": "0", "GAUGE_REFRESH_SECONDS": "30"},
        "inquiry": {"DISPATCH_SCAN_SECONDS": "5"},
    }.get(service, {})
    return {p + k: v for k, v in {**common, **extra}.items()}


@dataclass
class Instance:
    spec: InstanceSpec
    port: int
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Fleet:
    """Starts, SIGKILLs, restarts and stops the service processes of one run."""

    def __init__(
        self,
        endpoints: Endpoints,
        workdir: Path,
        *,
        token: str | None = None,
        specs: tuple[InstanceSpec, ...] = INSTANCES,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.workdir = workdir
        self.token = token or secrets.token_hex(4)
        self.keyring = KeyRing({"rel-1": secrets.token_urlsafe(32)}, "rel-1")
        self._extra_env = dict(extra_env or {})
        logs = workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.instances = {s.name: Instance(s, free_port(), logs / f"{s.name}.log") for s in specs}
        self._topics_created = False

    # -- names ----------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return f"rel{self.token}."

    def topic(self, name: str) -> str:
        return self.prefix + name

    def database(self, service: str) -> str:
        return f"rel_{self.token}_{service}"

    def url(self, name: str) -> str:
        return self.instances[name].url

    def first(self, service: str) -> Instance:
        return next(i for i in self.instances.values() if i.spec.service == service)

    def auth(self, role: Role = Role.ADMIN, subject: str = "reliability") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keyring.issue(subject, role)}"}

    # -- processes ------------------------------------------------------------------------

    def _env(self, inst: Instance) -> dict[str, str]:
        spec = inst.spec
        prefix = f"KEFU_{spec.service.upper()}_"
        return {
            **os.environ,
            **self.endpoints.as_env(),
            "KEFU_AUTH_KEYS": json.dumps(dict(self.keyring.keys)),
            "KEFU_AUTH_SIGNING_KEY": self.keyring.signing_kid,
            **service_env(spec.service, self.token),
            **self._extra_env,
            f"{prefix}HTTP_PORT": str(inst.port),
            f"{prefix}INSTANCE_ID": spec.name,
            **{prefix + k: v for k, v in spec.env.items()},
        }

    def start(self, name: str) -> None:
        inst = self.instances[name]
        if inst.alive():
            return
        with inst.log_file.open("ab") as out:
            out.write(f"\n--- start #{inst.starts + 1} at {time.time():.3f}\n".encode())
            out.flush()
            inst.process = subprocess.Popen(
                [sys.executable, "-m", f"kefu_{inst.spec.service}"],
                env=self._env(inst),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        inst.starts += 1

    def start_all(self) -> None:
        if not self._topics_created:
            # In a thread of its own: callers may or may not be inside an event loop.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(
                    asyncio.run, create_topics(self.endpoints.kafka_bootstrap, self.prefix)
                ).result()
            self._topics_created = True
        for name in self.instances:
            self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown hook, no flush, no goodbye; as a crash or an OOM kill."""
        inst = self.instances[name]
        if inst.process is None or not inst.alive():
            return
        inst.process.send_signal(signal.SIGKILL)
        inst.process.wait()
        inst.kills += 1

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def readiness(self, name: str, timeout: float = 3.0) -> tuple[int, dict[str, Any]]:
        """(status code, body) of /readyz; (0, {}) when the process does not answer."""
        try:
            r = httpx.get(f"{self.url(name)}/readyz", timeout=timeout)
        except httpx.HTTPError:
            return 0, {}
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, {}

    def is_ready(self, name: str) -> bool:
        return self.readiness(name, timeout=2.0)[0] == 200

    def wait_ready(self, names: list[str] | None = None, timeout: float = 180.0) -> None:
        pending = list(names or self.instances)
        deadline = time.monotonic() + timeout
        while pending:
            for name in list(pending):
                inst = self.instances[name]
                if not inst.alive():
                    raise RuntimeError(f"{name} exited; last lines:\n{self.tail(name)}")
                if self.is_ready(name):
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout:.0f}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.5)

    def stop_all(self, grace: float = 15.0) -> None:
        for inst in self.instances.values():
            if inst.alive() and inst.process is not None:
                inst.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for inst in self.instances.values():
            if inst.process is None:
                continue
            try:
                inst.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                inst.process.kill()
                inst.process.wait()

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            text = self.instances[name].log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_lines(self, name: str) -> list[str]:
        try:
            return self.instances[name].log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def drop_databases(self) -> None:
        from pymongo import MongoClient

        client: MongoClient[dict[str, Any]] = MongoClient(
            self.endpoints.mongodb_uri, serverSelectionTimeoutMS=5000
        )
        try:
            for service in SERVICES:
                client.drop_database(self.database(service))
        except Exception:  # cleanup only: never fail a run on it
            pass
        finally:
            client.close()


def production_topics() -> list[tuple[str, int, dict[str, str]]]:
    """(name, partitions, configs) of every topic in ``topics.txt``."""
    out: list[tuple[str, int, dict[str, str]]] = []
    for line in TOPICS_FILE.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        configs = dict(kv.split("=", 1) for kv in fields[2].split(",")) if len(fields) > 2 else {}
        out.append((fields[0], int(fields[1]), configs))
    return out


async def create_topics(bootstrap: str, prefix: str) -> None:
    """A run's topics, partitioned as in production; those that exist are left alone."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(prefix + name, partitions, 1, topic_configs=configs)
            for name, partitions, configs in production_topics()
            if prefix + name not in existing
        ]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Drop a run's topics: every partition a broker holds slows its restart down."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    try:
        await admin.start()
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    except Exception:  # cleanup only: never fail a run on it
        pass
    finally:
        await admin.close()
