"""Real Kafka and a MongoDB-protocol server for development and tests, never a mock.

`resolve_endpoints` picks, in order: servers named by the environment (CI, a shared cluster),
containers when a Docker engine answers (a laptop), else processes this package runs itself
(`LocalInfra`: a Kafka broker from Maven Central jars and FerretDB built with Go).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import time
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from kefu_local import ferretdb, kafka, paths, postgres
from kefu_local.process import InfraError, port_open, stop, tail

__all__ = ["Endpoints", "InfraError", "LocalInfra", "resolve_endpoints"]

Log = Callable[[str], None]
T = TypeVar("T")

DEFAULT_KAFKA_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_MONGO_PORT = 27027
COMPONENTS = ("kafka", "mongodb")
# FerretDB's PostgreSQL listens this far above FerretDB's own port: each profile's ports stay
# apart without another setting.
POSTGRES_PORT_ABOVE_MONGO = 1000


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    mongodb_uri: str
    source: str  # "env" | "docker" | "local"

    def as_env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap, "MONGODB_URI": self.mongodb_uri}


class LocalInfra:
    """A Kafka broker and FerretDB (on a PostgreSQL cluster of its own, else on SQLite) run as
    this user's processes, one set per profile. The "mongodb" component is FerretDB and its
    PostgreSQL together.

    Ports left as None reuse the ones recorded by the last `up()` of this profile (so `status`
    and `down` need only the profile), else the defaults 19092 / 19093 / 27027.
    """

    def __init__(
        self,
        profile: str = "dev",
        kafka_port: int | None = None,
        controller_port: int | None = None,
        mongo_port: int | None = None,
        state_dir: Path | None = None,
        log: Log = print,
    ) -> None:
        self.profile = profile
        self.state_dir = (state_dir or paths.default_state_dir(profile)).resolve()
        self._log = log
        recorded = self._recorded_ports()
        self.kafka = kafka.KafkaNode(
            self.state_dir,
            port=kafka_port or recorded.get("kafka_port", DEFAULT_KAFKA_PORT),
            controller_port=controller_port
            or recorded.get("controller_port", DEFAULT_CONTROLLER_PORT),
        )
        self.ferretdb = ferretdb.FerretDBNode(
            self.state_dir, port=mongo_port or recorded.get("mongo_port", DEFAULT_MONGO_PORT)
        )
        self.postgres = postgres.PostgresNode(
            self.state_dir, port=self.ferretdb.port + POSTGRES_PORT_ABOVE_MONGO
        )
        # What the last up() of this object started itself (rather than found running).
        self.started: frozenset[str] = frozenset()

    # -- files ------------------------------------------------------------------------------

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.kafka.bootstrap, self.ferretdb.uri, "local")

    @property
    def _ports_file(self) -> Path:
        return self.state_dir / "ports.json"

    @property
    def _lock_file(self) -> Path:
        return self.state_dir / ".lock"

    def _ports(self) -> dict[str, int]:
        return {
            "kafka_port": self.kafka.port,
            "controller_port": self.kafka.controller_port,
            "mongo_port": self.ferretdb.port,
        }

    def _recorded_ports(self) -> dict[str, int]:
        try:
            data = json.loads(self._ports_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {k: int(v) for k, v in data.items() if isinstance(v, int)}

    # -- lifecycle --------------------------------------------------------------------------

    def up(self, timeout: float = 180.0) -> Endpoints:
        """Start whatever is not running yet and wait until both servers answer.

        Idempotent: processes recorded in the state dir that still run are reused. `timeout`
        bounds the wait for the servers to answer; the one-time download and build before it
        have their own, longer limits.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with paths.file_lock(self._lock_file):
            kafka_pid = self.kafka.running_pid()
            mongo_pid = self.ferretdb.running_pid()
            if (kafka_pid or mongo_pid) and self._recorded_ports() not in ({}, self._ports()):
                raise InfraError(
                    f"profile {self.profile!r} already runs with {self._recorded_ports()}; "
                    f"run `infra down --profile {self.profile}` before changing ports"
                )
            if kafka_pid is None:
                self._require_free(self.kafka.port, "Kafka")
                self._require_free(self.kafka.controller_port, "the Kafka controller")
            if mongo_pid is None:
                self._require_free(self.ferretdb.port, "FerretDB")
                if self.postgres.running_pid() is None:
                    self._require_free(self.postgres.port, "FerretDB's PostgreSQL")
            self._ports_file.write_text(json.dumps(self._ports()) + "\n")
            started = self._start(kafka_pid is None, mongo_pid is None)
            self.started = frozenset(started)
            if not started:
                self._log(f"reusing running Kafka (pid {kafka_pid}) and FerretDB (pid {mongo_pid})")
            self._wait_ready(timeout)
            endpoints = self.endpoints
            (self.state_dir / "endpoints.env").write_text(
                "".join(f"{k}={v}\n" for k, v in endpoints.as_env().items())
            )
        return endpoints

    def down(self, components: Collection[str] = COMPONENTS, grace_seconds: float = 20.0) -> None:
        """Stop the servers (SIGTERM, then SIGKILL after grace_seconds) and drop their pid
        files. Data and logs stay; delete the state dir to start from scratch."""
        with paths.file_lock(self._lock_file):
            nodes: dict[str, kafka.KafkaNode | ferretdb.FerretDBNode] = {
                "kafka": self.kafka,
                "mongodb": self.ferretdb,
            }
            pids = {name: nodes[name].running_pid() for name in components}
            running = {name: pid for name, pid in pids.items() if pid is not None}
            if running:
                self._log(
                    "stopping " + ", ".join(f"{name} (pid {pid})" for name, pid in running.items())
                )
                stop(list(running.values()), grace_seconds)
            if "mongodb" in components:
                # After FerretDB, its only client, is gone; SIGINT is PostgreSQL's fast
                # shutdown (SIGTERM would wait for clients to leave).
                postgres_pid = self.postgres.running_pid()
                if postgres_pid is not None:
                    self._log(f"stopping FerretDB's PostgreSQL (pid {postgres_pid})")
                    stop([postgres_pid], grace_seconds, signal.SIGINT)
                self.postgres.pid_file.unlink(missing_ok=True)
            for name in components:
                nodes[name].pid_file.unlink(missing_ok=True)
            if self.kafka.running_pid() is None and self.ferretdb.running_pid() is None:
                (self.state_dir / "endpoints.env").unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        kafka_pid = self.kafka.running_pid()
        mongo_pid = self.ferretdb.running_pid()
        return {
            "profile": self.profile,
            "state_dir": str(self.state_dir),
            "logs_dir": str(self.logs_dir),
            "kafka": {
                "pid": kafka_pid,
                "running": kafka_pid is not None,
                "port_open": port_open(self.kafka.host, self.kafka.port),
                "bootstrap": self.kafka.bootstrap,
                "log": str(self.kafka.log_file),
            },
            "mongodb": {
                "pid": mongo_pid,
                "running": mongo_pid is not None,
                "port_open": port_open(self.ferretdb.host, self.ferretdb.port),
                "uri": self.ferretdb.uri,
                "log": str(self.ferretdb.log_file),
                "postgresql": {
                    "pid": self.postgres.running_pid(),
                    "url": self.postgres.url,
                    "log": str(self.postgres.log_file),
                },
            },
        }

    def store_kind(self) -> str:
        """What the running MongoDB-protocol server stores on, for reports."""
        backend = "PostgreSQL" if self.postgres.running_pid() is not None else "SQLite"
        return f"FerretDB {ferretdb.FERRETDB_VERSION} ({backend})"

    # -- helpers ----------------------------------------------------------------------------

    def _require_free(self, port: int, what: str) -> None:
        if port_open("127.0.0.1", port, timeout=0.3):
            raise InfraError(
                f"port {port} for {what} is taken by a process this profile did not start "
                f"(state dir {self.state_dir}); stop it or choose other ports"
            )

    def _start(self, need_kafka: bool, need_mongo: bool) -> set[str]:
        """Start what is missing, each server in its own thread as soon as its jars or binary
        are ready: on a first run the Maven fetch and the Go build overlap, and Kafka boots
        while Go is still compiling, so the first run costs the longer chain, not the sum."""
        tasks: dict[str, Callable[[], int]] = {}
        if need_kafka:
            tasks["kafka"] = lambda: self.kafka.start(kafka.ensure_jars(self._log), self._log)
        if need_mongo:
            tasks["mongodb"] = self._start_store
        if not tasks:
            return set()
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(tasks)) as pool:
            futures = {name: pool.submit(task) for name, task in tasks.items()}
        for future in futures.values():
            future.result()  # re-raise the first failure (after both threads finished)
        return set(futures)

    def _start_store(self) -> int:
        """FerretDB, on PostgreSQL where it can run."""
        postgres_bindir = self._postgres_bindir()
        binary = ferretdb.ensure_binary(self._log)
        postgresql_url = None
        if postgres_bindir is not None:
            if self.postgres.running_pid() is None:
                self.postgres.start(postgres_bindir, self._log)
            postgresql_url = self.postgres.url
        return self.ferretdb.start(binary, postgresql_url, self._log)

    def _postgres_bindir(self) -> Path | None:
        """PostgreSQL's binaries for FerretDB, or None for SQLite (`KEFU_FERRETDB_BACKEND`)."""
        choice = os.environ.get("KEFU_FERRETDB_BACKEND", "").lower()
        if choice == "sqlite":
            return None
        if choice not in ("", "postgresql"):
            raise InfraError(f"KEFU_FERRETDB_BACKEND={choice!r}: expected 'postgresql' or 'sqlite'")
        bindir = postgres.find_bindir()
        if bindir is None:
            reason = "no PostgreSQL found (./kefu installs Debian's postgresql package)"
        elif not self.postgres.reachable_by_server_user():
            reason = f"the postgres user cannot enter {self.state_dir}"
        else:
            return bindir
        if choice == "postgresql":
            raise InfraError(f"KEFU_FERRETDB_BACKEND=postgresql, but {reason}")
        self._log(f"FerretDB falls back to SQLite ({reason}); every command will scan")
        return None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {"kafka", "mongodb"}
        while pending:
            for name in sorted(pending):
                self._check_alive(name)
                if self._answers(name):
                    pending.discard(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                name = sorted(pending)[0]
                raise InfraError(
                    f"{name} did not answer within {timeout:.0f} s; last log lines:\n"
                    + self._log_tail(name)
                )
            time.sleep(0.25)

    def _check_alive(self, name: str) -> None:
        node: kafka.KafkaNode | ferretdb.FerretDBNode = (
            self.kafka if name == "kafka" else self.ferretdb
        )
        if node.running_pid() is None:
            raise InfraError(
                f"{name} exited during startup; last log lines:\n" + self._log_tail(name)
            )

    def _log_tail(self, name: str) -> str:
        if name == "kafka":
            return (
                f"--- {self.kafka.log_file}\n{tail(self.kafka.log_file)}\n"
                f"--- {self.kafka.console_file}\n{tail(self.kafka.console_file, 15)}"
            )
        return (
            f"--- {self.ferretdb.log_file}\n{tail(self.ferretdb.log_file)}\n"
            f"--- {self.postgres.log_file}\n{tail(self.postgres.log_file, 15)}"
        )

    def _answers(self, name: str) -> bool:
        if name == "kafka":
            # An open port is not a ready broker: it must return metadata listing itself,
            # which it does only once the controller has registered and unfenced it.
            return port_open(self.kafka.host, self.kafka.port) and _run_async(
                lambda: _kafka_answers(self.kafka.bootstrap)
            )
        return port_open(self.ferretdb.host, self.ferretdb.port) and _mongo_answers(
            self.ferretdb.uri
        )


async def _kafka_answers(bootstrap: str) -> bool:
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except (KafkaError, OSError):
        return False
    finally:
        await client.close()


def _mongo_answers(uri: str) -> bool:
    client: MongoClient[dict[str, Any]] = MongoClient(
        uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=1000
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when the caller is itself inside an
    event loop (an async fixture calling up()): then it runs on a fresh loop in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


# -- choosing a source ----------------------------------------------------------------------


def docker_available(timeout: float = 2.0) -> bool:
    """True if a Docker engine answers a ping within timeout (a missing socket fails at once)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no permission, a hung engine: all mean "no Docker"
        return False


def _start_containers(log: Log) -> tuple[Endpoints, Callable[[], None]]:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.mongodb import MongoDbContainer

    log("starting Kafka and MongoDB 7 containers with testcontainers...")
    kafka_container = KafkaContainer().with_kraft()
    kafka_container.start()
    try:
        mongo_container = MongoDbContainer("mongo:7")
        mongo_container.start()
    except BaseException:
        kafka_container.stop()
        raise

    def stop_containers() -> None:
        mongo_container.stop()
        kafka_container.stop()

    endpoints = Endpoints(
        kafka_bootstrap=kafka_container.get_bootstrap_server(),
        mongodb_uri=mongo_container.get_connection_url(),
        source="docker",
    )
    return endpoints, stop_containers


def resolve_endpoints(
    profile: str = "dev",
    *,
    kafka_port: int | None = None,
    controller_port: int | None = None,
    mongo_port: int | None = None,
    state_dir: Path | None = None,
    timeout: float = 180.0,
    log: Log = print,
) -> tuple[Endpoints, Callable[[], None] | None]:
    """Real servers for a test session or a dev run, and how to stop them (None: nothing to
    stop, because this call started nothing).

    1. `KAFKA_BOOTSTRAP_SERVERS` and `MONGODB_URI` both set: use them as they are.
    2. A Docker engine answers (unless `KEFU_INFRA=local`): testcontainers Kafka + mongo:7.
    3. Otherwise `LocalInfra(profile, ...)`; the callback stops only what this call started,
       so a developer's already-running `infra up` survives a test run.
    """
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    mongodb_uri = os.environ.get("MONGODB_URI")
    if bootstrap and mongodb_uri:
        log(f"infra: using env KAFKA_BOOTSTRAP_SERVERS={bootstrap} MONGODB_URI={mongodb_uri}")
        return Endpoints(bootstrap, mongodb_uri, "env"), None
    forced = os.environ.get("KEFU_INFRA", "").lower()
    if forced != "local" and (forced == "docker" or docker_available()):
        endpoints, stop_containers = _start_containers(log)
        log(f"infra: using docker {endpoints.kafka_bootstrap} {endpoints.mongodb_uri}")
        return endpoints, stop_containers
    infra = LocalInfra(profile, kafka_port, controller_port, mongo_port, state_dir, log)
    endpoints = infra.up(timeout)
    log(
        f"infra: using local processes {endpoints.kafka_bootstrap} {endpoints.mongodb_uri} "
        f"(logs in {infra.logs_dir})"
    )
    started = infra.started
    if not started:
        return endpoints, None
    return endpoints, lambda: infra.down(started)
