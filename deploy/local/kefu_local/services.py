"""Start kefu's services as separate local processes, as they would run in production.

Each service is its own process (its own ``python -m kefu_<service>``), its own HTTP port and
consumer group; the inquiry service runs twice, once for chat and once for the other channels,
the way a platform team scales chat on its own during a promotion.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from kefu_local.infra import Endpoints


@dataclass(frozen=True)
class ServiceSpec:
    """One process to run: which service, on which port, with which extra settings."""

    instance: str
    service: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return f"kefu_{self.service}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def installed(self) -> bool:
        if importlib.util.find_spec(self.module) is None:
            return False
        return importlib.util.find_spec(f"{self.module}.__main__") is not None


LOCAL_SERVICES = (
    ServiceSpec("notifier", "notifier", 8101),
    ServiceSpec("inquiry-chat", "inquiry", 8102, {"KEFU_INQUIRY_CHANNELS": "chat"}),
    ServiceSpec(
        "inquiry-other",
        "inquiry",
        8103,
        {"KEFU_INQUIRY_CHANNELS": "phone,email,social,marketplace"},
    ),
    ServiceSpec("orders", "orders", 8104),
    ServiceSpec("aftersales", "aftersales", 8105),
    ServiceSpec("feedback", "feedback", 8106),
)


@dataclass
class RunningService:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    log_file: Path


class ServiceProcesses:
    """Starts, health-checks and stops the service processes of one local run."""

    def __init__(
        self,
        endpoints: Endpoints,
        logs_dir: Path,
        extra_env: Mapping[str, str],
        *,
        run_id: str = "",
    ) -> None:
        self._endpoints = endpoints
        self._logs_dir = logs_dir
        self._extra_env = dict(extra_env)
        self._run_id = run_id
        self.running: list[RunningService] = []

    @property
    def topic_prefix(self) -> str:
        """Each run its own topics and databases, so running twice never mixes two days."""
        return f"run{self._run_id}." if self._run_id else ""

    def start(self, specs: tuple[ServiceSpec, ...]) -> None:
        self._logs_dir.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            prefix = f"KEFU_{spec.service.upper()}_"
            env = {
                **os.environ,
                **self._endpoints.as_env(),
                **self._extra_env,
                f"{prefix}HTTP_PORT": str(spec.port),
                f"{prefix}INSTANCE_ID": spec.instance,
                **spec.env,
            }
            if self._run_id:
                env[f"{prefix}TOPIC_PREFIX"] = self.topic_prefix
                env[f"{prefix}MONGODB_DATABASE"] = f"kefu_{spec.service}_{self._run_id}"
            log_file = self._logs_dir / f"{spec.instance}.log"
            with log_file.open("ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", spec.module],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us; we stop them in order
                )
            self.running.append(RunningService(spec, process, log_file))

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.running)
        while pending:
            for svc in list(pending):
                if svc.process.poll() is not None:
                    raise RuntimeError(
                        f"{svc.spec.instance} exited with {svc.process.returncode}; "
                        f"see {svc.log_file}"
                    )
                try:
                    if httpx.get(f"{svc.spec.url}/readyz", timeout=1.0).status_code == 200:
                        pending.remove(svc)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.spec.instance for s in pending)
                raise RuntimeError(f"not ready after {timeout:.0f}s: {names}")
            if pending:
                time.sleep(0.5)

    def stop(self, grace: float = 20.0) -> None:
        for svc in self.running:
            if svc.process.poll() is None:
                svc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for svc in self.running:
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                svc.process.wait(remaining)
            except subprocess.TimeoutExpired:
                svc.process.kill()
                svc.process.wait()
        self.running.clear()


def available_services() -> tuple[ServiceSpec, ...]:
    return tuple(spec for spec in LOCAL_SERVICES if spec.installed())
