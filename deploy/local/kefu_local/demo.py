"""``kefu run``: the whole system on this machine with a simulated shop day, and live progress.

Starts (or reuses) Kafka and FerretDB, starts every service as its own process, plays the shop
day through the services' public inputs, shows what each service handled while it happens, and
prints where to look afterwards. Ctrl-C stops everything cleanly; running it twice works.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from kefu_shared.auth import KeyRing
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kefu_local.agents import AgentFloor
from kefu_local.infra import resolve_endpoints
from kefu_local.paths import REPO_ROOT
from kefu_local.services import RunningService, ServiceProcesses, available_services
from kefu_local.simulator import ShopDay, publish_messages

console = Console()


@dataclass
class ServiceCounters:
    received: float = 0.0
    handled: float = 0.0
    failed: float = 0.0
    dead_letters: float = 0.0
    business: dict[str, float] = field(default_factory=dict)


def scrape(url: str) -> ServiceCounters:
    counters = ServiceCounters()
    try:
        text = httpx.get(f"{url}/metrics", timeout=2.0).text
    except httpx.HTTPError:
        return counters
    business: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "faststream_received_messages_total":
                counters.received += sample.value
            elif sample.name == "faststream_received_processed_messages_total":
                if sample.labels.get("status") in ("acked", "success"):
                    counters.handled += sample.value
                else:
                    counters.failed += sample.value
            elif sample.name == "kefu_dead_letters_total":
                counters.dead_letters += sample.value
            elif sample.name.startswith("kefu_") and sample.name.endswith("_total"):
                label = ",".join(f"{v}" for k, v in sorted(sample.labels.items()) if k != "service")
                key = sample.name.removeprefix("kefu_").removesuffix("_total")
                business[f"{key}{{{label}}}" if label else key] += sample.value
    counters.business = dict(business)
    return counters


def render(running: list[RunningService], progress: Progress) -> Group:
    table = Table(title="kefu services (live, from each service's /metrics)")
    for column in ("service", "url", "messages in", "handled", "DLQ"):
        table.add_column(column, justify="right" if column not in ("service", "url") else "left")
    for svc in running:
        c = scrape(svc.spec.url)
        table.add_row(
            svc.spec.instance,
            svc.spec.url,
            f"{c.received:.0f}",
            f"{c.handled:.0f}",
            f"{c.dead_letters:.0f}",
        )
    return Group(progress, table)


def business_summary(running: list[RunningService]) -> Table:
    table = Table(title="what happened (business counters)")
    table.add_column("service")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for svc in running:
        for name, value in sorted(scrape(svc.spec.url).business.items()):
            if value:
                table.add_row(svc.spec.instance, name, f"{value:.0f}")
    return table


def run_demo(*, profile: str, size: int, seed: int, keep_running: bool) -> int:
    started = time.monotonic()
    console.rule("[bold]kefu: a shop's day on real Kafka and FerretDB")
    endpoints, stop_infra = resolve_endpoints(profile, log=lambda m: console.print(f"  {m}"))
    logs_dir = REPO_ROOT / ".kefu" / profile / "logs"
    keyring = local_keyring(REPO_ROOT / ".kefu" / profile)
    auth_env = {
        "KEFU_AUTH_KEYS": json.dumps(dict(keyring.keys)),
        "KEFU_AUTH_SIGNING_KEY": keyring.signing_kid,
    }
    processes = ServiceProcesses(endpoints, logs_dir, {"KEFU_DEMO": "1", **auth_env})
    specs = available_services()
    try:
        console.print(f"starting {len(specs)} service processes (logs in {logs_dir}) ...")
        processes.start(specs)
        processes.wait_ready()
        console.print(f"all services ready after {time.monotonic() - started:.1f}s")
        day = ShopDay(seed=seed, size=size)
        planned = day.customer_messages()
        floor = _start_agents(processes.running, seed, keyring)
        asyncio.run(publish_messages(endpoints.kafka_bootstrap, planned))
        console.print(f"published {len(planned)} customer messages on 5 channels (seed {seed})")
        _watch(processes.running, expected=len(planned))
        if floor is not None:
            floor.finish(after=20.0)
            stats = floor.floor.stats
            console.print(
                f"agents: {stats.replies} replies, {stats.resolved} resolved, "
                f"{stats.escalations} escalations, {stats.errors} HTTP errors"
            )
        console.print(business_summary(processes.running))
        _print_urls(processes.running)
        console.print(f"demo finished in {time.monotonic() - started:.0f}s")
        if keep_running:
            console.print("everything keeps running; Ctrl-C stops it")
            while True:
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        console.print("stopping ...")
        return 130
    finally:
        processes.stop()
        if stop_infra is not None and not keep_running:
            stop_infra()


@dataclass
class RunningFloor:
    floor: AgentFloor
    thread: threading.Thread
    stop: threading.Event

    def finish(self, *, after: float) -> None:
        console.print(f"agents keep working their queues for {after:.0f}s ...")
        time.sleep(after)
        self.stop.set()
        self.thread.join(timeout=30)


def local_keyring(state_dir: Path) -> KeyRing:
    """The token keys of a local run: made once per profile, kept beside its data."""
    path = state_dir / "auth.json"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"local-1": secrets.token_urlsafe(32)}))
        path.chmod(0o600)
    keys: dict[str, str] = json.loads(path.read_text())
    return KeyRing(keys, next(iter(keys)))


def _start_agents(
    running: list[RunningService], seed: int, keyring: KeyRing
) -> RunningFloor | None:
    inquiry = next((s for s in running if s.spec.service == "inquiry"), None)
    if inquiry is None:
        return None
    floor = AgentFloor(inquiry.spec.url, seed=seed, keyring=keyring)
    stop = threading.Event()
    thread = threading.Thread(
        target=asyncio.run,
        args=(floor.work(stop.is_set, shift_change_after=15.0),),
        name="agents",
        daemon=True,
    )
    thread.start()
    return RunningFloor(floor, thread, stop)


def _watch(running: list[RunningService], *, expected: int, timeout: float = 300.0) -> None:
    inquiry = [s for s in running if s.spec.service == "inquiry"]
    progress = Progress(
        TextColumn("customer messages handled by the inquiry service"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    task = progress.add_task("intake", total=expected)
    deadline = time.monotonic() + timeout
    with Live(render(running, progress), console=console, refresh_per_second=2) as live:
        while time.monotonic() < deadline:
            done = sum(scrape(s.spec.url).handled for s in inquiry) if inquiry else expected
            progress.update(task, completed=min(done, expected))
            live.update(render(running, progress))
            if done >= expected:
                time.sleep(3)  # let notifications and follow-ups drain
                live.update(render(running, progress))
                return
            time.sleep(1)
    console.print("[yellow]timed out waiting for the services to handle every message")


def _print_urls(running: list[RunningService]) -> None:
    console.rule("where to look")
    for svc in running:
        url = svc.spec.url
        console.print(
            f"{svc.spec.instance:14} API docs {url}/docs   AsyncAPI {url}/asyncapi   "
            f"metrics {url}/metrics   log {svc.log_file}"
        )
