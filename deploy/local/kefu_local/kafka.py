"""A single-node Apache Kafka broker (KRaft, no ZooKeeper) run straight from Maven Central jars.

Neither Debian nor PyPI packages Kafka, but Maven Central has every jar the broker needs, and a
JDK is all it takes to run it. The jars are fetched once into the shared cache; each profile
gets its own config, data and logs in its state dir.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kefu_local import paths
from kefu_local.process import InfraError, start_detached, tracked_pid

KAFKA_VERSION = "4.1.1"
MAVEN_TIMEOUT_SECONDS = 900

Log = Callable[[str], None]

# Capped on purpose: the JVM's default heap is a quarter of RAM, far too much beside the
# services, and a broker for development lives happily in a few hundred megabytes.
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    # C1 only: C2's compiler threads took 60 % of the broker's CPU in a benchmark's first
    # minutes (0.55 of the machine's two cores, measured by thread), competing with the services
    # for the whole of a test run or a demo; C1 code is a little slower, and fine here.
    "-XX:TieredStopAtLevel=1",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


def java_executable() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise InfraError("no `java` found: install a JDK 17+ (e.g. apt-get install openjdk-17-jdk)")
    return found


def ensure_jars(log: Log = print) -> Path:
    """The directory holding Kafka's runtime jars, fetched from Maven Central on first use."""
    jars = paths.kafka_jars_dir()
    done = jars / ".complete"
    if done.exists():
        return jars
    with paths.file_lock(paths.cache_dir() / "kafka-jars.lock"):
        if done.exists():  # another process fetched them while we waited for the lock
            return jars
        mvn = shutil.which("mvn")
        if mvn is None:
            raise InfraError("no `mvn` found: install Maven (apt-get install maven) to fetch Kafka")
        log(f"fetching Kafka {KAFKA_VERSION} jars from Maven Central (first run, ~20 s)...")
        started = time.monotonic()
        # Into a scratch dir, renamed at the end: an interrupted download never looks complete.
        scratch = jars.with_name(jars.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            result = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(paths.KAFKA_POM),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={scratch}",
                ],
                capture_output=True,
                text=True,
                timeout=MAVEN_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"Maven did not finish in {MAVEN_TIMEOUT_SECONDS} s") from exc
        if result.returncode != 0:
            raise InfraError(
                "Maven could not fetch the Kafka jars:\n" + (result.stdout + result.stderr)[-4000:]
            )
        count = len(list(scratch.glob("*.jar")))
        (scratch / ".complete").write_text(f"kafka {KAFKA_VERSION}, {count} jars\n")
        shutil.rmtree(jars, ignore_errors=True)
        scratch.rename(jars)
        # Jars of an older pom are dead weight; a running broker keeps its open files.
        for old in jars.parent.glob("kafka-jars-*"):
            if old != jars and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        log(f"fetched {count} jars in {time.monotonic() - started:.0f} s into {jars}")
    return jars


def new_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints, without paying a JVM start for it: 16 random
    bytes in URL-safe base64 without padding; Kafka rejects ids starting with '-' and its two
    reserved ids (all zeros, and zeros ending in 1), so skip those as Kafka's Uuid does."""
    while True:
        raw = uuid.uuid4().bytes
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if not text.startswith("-") and int.from_bytes(raw, "big") > 1:
            return text


def _properties_escape(value: str) -> str:
    """A value as java.util.Properties reads it back: inline PEM (ssl.keystore.key) spans lines."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


@dataclass(frozen=True)
class KafkaListener:
    """A client listener beside PLAINTEXT, e.g. SASL_SSL to try the services' security settings
    on a real broker. PLAINTEXT stays: the readiness check and inter-broker traffic use it."""

    name: str
    port: int
    protocol: str  # Kafka's security protocol: SSL, SASL_PLAINTEXT or SASL_SSL


@dataclass(frozen=True)
class KafkaNode:
    """One broker+controller process whose files live under state_dir."""

    state_dir: Path
    port: int
    controller_port: int
    host: str = "127.0.0.1"
    extra_listeners: tuple[KafkaListener, ...] = ()
    # Added to the generated server.properties, winning over it: the extra listeners' TLS
    # and SASL settings (`listener.name.<name>....`).
    extra_properties: Mapping[str, str] = field(default_factory=dict, hash=False)
    # `kafka-storage format --add-scram` values ('SCRAM-SHA-512=[name=u,password=p]'): KRaft
    # keeps SCRAM users in its metadata log, so they are written when the storage is formatted
    # (a state dir formatted before keeps the users it had).
    scram_users: tuple[str, ...] = ()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def home(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        """The broker's own log (log4j)."""
        return self.state_dir / "logs" / "kafka.log"

    @property
    def console_file(self) -> Path:
        """The JVM's stdout/stderr: startup crashes and JVM warnings land here, not in log4j."""
        return self.state_dir / "logs" / "kafka.out"

    def running_pid(self) -> int | None:
        # The config path is unique per state dir, so it identifies our broker in `ps`.
        return tracked_pid(self.pid_file, str(self.config_file))

    def properties(self) -> dict[str, str]:
        ctl = f"{self.host}:{self.controller_port}"
        plain = f"{self.host}:{self.port}"
        listeners = ",".join(
            [f"PLAINTEXT://{plain}", f"CONTROLLER://{ctl}"]
            + [f"{x.name}://{self.host}:{x.port}" for x in self.extra_listeners]
        )
        protocols = ",".join(
            ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
            + [f"{x.name}:{x.protocol}" for x in self.extra_listeners]
        )
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            # With `format --standalone` the voter set is written into the log; adding
            # controller.quorum.voters as well is a hard error in Kafka 4.1.
            "controller.quorum.bootstrap.servers": ctl,
            "listeners": listeners,
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": protocols,
            "log.dirs": str(self.data_dir),
            "num.partitions": "4",
            "auto.create.topics.enable": "true",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # One node: every internal topic must fit on it, or groups/transactions never work.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Consumers in tests join alone; the default 3 s wait only slows every first poll.
            "group.initial.rebalance.delay.ms": "0",
            # A week of data at most, so a long-lived dev state dir does not grow forever.
            "log.retention.hours": "168",
            **self.extra_properties,
        }

    def log4j_properties(self) -> str:
        log = self.log_file
        return "\n".join(
            [
                "# Written by kefu_local; rewritten on every start.",
                "status = warn",
                "appender.file.type = RollingFile",
                "appender.file.name = FILE",
                f"appender.file.fileName = {log}",
                f"appender.file.filePattern = {log}.%i",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "appender.file.policies.type = Policies",
                "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
                "appender.file.policies.size.size = 20MB",
                "appender.file.strategy.type = DefaultRolloverStrategy",
                "appender.file.strategy.max = 3",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.file.ref = FILE",
                # The state-change and request loggers are chatty at INFO and rarely useful here.
                "logger.statechange.name = state.change.logger",
                "logger.statechange.level = WARN",
                "logger.request.name = kafka.request.logger",
                "logger.request.level = WARN",
                "",
            ]
        )

    def write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(
            f"{key}={_properties_escape(value)}\n" for key, value in self.properties().items()
        )
        self.config_file.write_text("# Written by kefu_local; rewritten on every start.\n" + body)
        self.log4j_file.write_text(self.log4j_properties())

    def _java(self, jars: Path, main: str, *args: str) -> list[str]:
        return [
            java_executable(),
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
            "-cp",
            f"{jars}/*",
            main,
            *args,
        ]

    def format_storage(self, jars: Path, log: Log = print) -> None:
        """Format the data dir once. Kafka records the controller's address in the log at
        format time, so a state dir formatted for one controller port cannot switch ports."""
        stamp = self.home / "formatted-for"
        wanted = f"controller_port={self.controller_port}\n"
        if (self.data_dir / "meta.properties").exists():
            if stamp.exists() and stamp.read_text() != wanted:
                raise InfraError(
                    f"{self.data_dir} was formatted for {stamp.read_text().strip()}, not "
                    f"{wanted.strip()}: use the old port or delete {self.home}"
                )
            return  # skip the JVM start; `--ignore-formatted` would make it a no-op anyway
        id_file = self.home / "cluster.id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        log(f"formatting Kafka storage in {self.data_dir} (cluster id {cluster_id})")
        argv = self._java(
            jars,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(self.config_file),
            "--ignore-formatted",
            *(arg for user in self.scram_users for arg in ("--add-scram", user)),
        )
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise InfraError("kafka-storage format failed:\n" + (result.stdout + result.stderr))
        stamp.write_text(wanted)

    def start(self, jars: Path, log: Log = print) -> int:
        """Write the config, format if new, and start the broker detached; returns its pid."""
        self.write_config()
        self.format_storage(jars, log)
        pid = start_detached(
            self._java(jars, "kafka.Kafka", str(self.config_file)),
            log_file=self.console_file,
            pid_file=self.pid_file,
            cwd=self.home,
        )
        log(f"started Kafka {KAFKA_VERSION} (pid {pid}) on {self.bootstrap}")
        return pid
