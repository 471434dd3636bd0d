"""``kefu run``: the whole system on this machine with a simulated shop day, and live progress.

Starts (or reuses) Kafka and FerretDB, starts every service as its own process (the inquiry
service twice: chat, and the other channels), plays the shop day through the services' public
inputs, shows what each service handles while it happens, writes the supervisor's report, and
prints where to look. Ctrl-C stops everything cleanly; running it twice works.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from kefu_shared.auth import KeyRing, Role
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kefu_local.demo_check import idle_services, kpi_gaps
from kefu_local.demo_profile import demo_environment
from kefu_local.infra import resolve_endpoints
from kefu_local.paths import REPO_ROOT
from kefu_local.services import RunningService, ServiceProcesses, available_services
from kefu_local.shop_day import DemoDay, Urls

console = Console()


@dataclass
class ServiceCounters:
    received: float = 0.0
    handled: float = 0.0
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
            elif sample.name == "kefu_dead_letters_total":
                counters.dead_letters += sample.value
            elif sample.name.startswith("kefu_") and sample.name.endswith("_total"):
                key = sample.name.removeprefix("kefu_").removesuffix("_total")
                status = sample.labels.get("status") or sample.labels.get("outcome")
                business[f"{key}{{{status}}}" if status else key] += sample.value
    counters.business = dict(business)
    return counters


def local_keyring(state_dir: Path) -> KeyRing:
    """The token keys of a local run: made once per profile, kept beside its data."""
    path = state_dir / "auth.json"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"local-1": secrets.token_urlsafe(32)}))
        path.chmod(0o600)
    keys: dict[str, str] = json.loads(path.read_text())
    return KeyRing(keys, next(iter(keys)))


def _stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C: the service processes are stopped, not orphaned."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run_demo(
    *,
    profile: str,
    size: int,
    seed: int,
    keep_running: bool,
    check: bool = False,
    port_offset: int = 0,
    reports_dir: Path | None = None,
) -> int:
    """Play the day; with ``check``, exit 1 unless every service handled traffic and every KPI
    of the report has a value."""
    _stop_on_sigterm()
    started = time.monotonic()
    console.rule("[bold]kefu: a shop's day on real Kafka and FerretDB")
    endpoints, stop_infra = resolve_endpoints(profile, log=lambda m: console.print(f"  {m}"))
    state_dir = REPO_ROOT / ".kefu" / profile
    logs_dir = state_dir / "logs"
    keyring = local_keyring(state_dir)
    env = {
        **demo_environment(),
        "KEFU_AUTH_KEYS": json.dumps(dict(keyring.keys)),
        "KEFU_AUTH_SIGNING_KEY": keyring.signing_kid,
    }
    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    processes = ServiceProcesses(endpoints, logs_dir, env, run_id=run_id)
    specs = tuple(replace(s, port=s.port + port_offset) for s in available_services())
    try:
        console.print(f"starting {len(specs)} service processes (logs in {logs_dir}) ...")
        processes.start(specs)
        processes.wait_ready()
        console.print(f"all services ready after {time.monotonic() - started:.1f}s")
        urls = Urls(
            inquiry=_url(processes.running, "inquiry"),
            aftersales=_url(processes.running, "aftersales"),
        )
        day = DemoDay(
            bootstrap=endpoints.kafka_bootstrap,
            urls=urls,
            keyring=keyring,
            seed=seed,
            size=size,
            topic_prefix=processes.topic_prefix,
        )
        console.print(
            f"playing the day: {len(day.messages)} customer messages, {len(day.orders)} orders "
            f"(seed {seed}); agents on two shifts; reviews, returns and surveys follow"
        )
        asyncio.run(_play_with_progress(day, processes.running))
        _summary(day, processes.running)
        report = _write_report(processes.running, keyring, reports_dir or REPO_ROOT / "reports")
        _print_urls(processes.running, report, logs_dir, day.messages[0].envelope.correlation_id)
        complete = _show_completeness(processes.running, keyring)
        console.print(f"demo finished in {time.monotonic() - started:.0f}s")
        if check and not complete:
            return 1
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


def _url(running: list[RunningService], service: str) -> str | None:
    return next((s.spec.url for s in running if s.spec.service == service), None)


async def _play_with_progress(day: DemoDay, running: list[RunningService]) -> None:
    progress = Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    messages = progress.add_task("customer messages sent", total=day.progress.messages_planned)
    orders = progress.add_task("order lifecycle steps", total=day.progress.order_steps_planned)
    handled = progress.add_task("messages handled by inquiry", total=len(day.messages))
    inquiry = [s for s in running if s.spec.service == "inquiry"]

    def frame() -> Group:
        p = day.progress
        progress.update(messages, completed=p.messages_sent)
        progress.update(orders, completed=p.order_steps_sent)
        done = sum(
            value
            for svc in inquiry
            for name, value in scrape(svc.spec.url).business.items()
            if name.startswith("inquiry_messages")
        )
        progress.update(handled, completed=min(done, len(day.messages)))
        return Group(progress, _service_table(running), _desk_line(day))

    play = asyncio.create_task(day.play())
    with Live(frame(), console=console, refresh_per_second=1) as live:
        while not play.done():
            live.update(await asyncio.to_thread(frame))
            await asyncio.sleep(1.0)
        live.update(await asyncio.to_thread(frame))
    await play


def _service_table(running: list[RunningService]) -> Table:
    table = Table(title="services (live, from each one's /metrics)")
    for column in ("service", "messages in", "handled", "DLQ"):
        table.add_column(column, justify="left" if column == "service" else "right")
    for svc in running:
        c = scrape(svc.spec.url)
        table.add_row(
            svc.spec.instance, f"{c.received:.0f}", f"{c.handled:.0f}", f"{c.dead_letters:.0f}"
        )
    return table


def _desk_line(day: DemoDay) -> str:
    d = day.progress.desk
    floor = day.floor.stats if day.floor else None
    agents = (
        f"agents: {floor.replies} replies, {floor.resolved} resolved, "
        f"{floor.escalations} escalated, {floor.transfers} transferred, "
        f"{floor.reopened} reopened   "
        if floor
        else ""
    )
    return (
        f"[dim]{day.progress.phase}[/dim]\n{agents}desk: {d.cases_opened} cases opened, "
        f"{d.cases_closed} closed, {d.reviews_posted} reviews, {d.review_replies} replies; "
        f"{d.surveys_answered} surveys answered"
    )


def _summary(day: DemoDay, running: list[RunningService]) -> None:
    table = Table(title="what happened (business counters, all services)")
    table.add_column("service")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for svc in running:
        for name, value in sorted(scrape(svc.spec.url).business.items()):
            if value and not name.startswith("outbox"):
                table.add_row(svc.spec.instance, name, f"{value:.0f}")
    console.print(table)


def _report_period() -> dict[str, str]:
    # The period is read in the shop's time zone (Asia/Shanghai, up to 14 h ahead of UTC
    # elsewhere): from yesterday to the day after tomorrow (UTC dates) always covers "now".
    today = datetime.now(UTC).date()
    return {
        "from": (today - timedelta(days=1)).isoformat(),
        "to": (today + timedelta(days=2)).isoformat(),
    }


def _write_report(running: list[RunningService], keyring: KeyRing, reports: Path) -> Path | None:
    feedback = _url(running, "feedback")
    if feedback is None:
        return None
    reports.mkdir(parents=True, exist_ok=True)
    today = datetime.now(UTC).date()
    period = _report_period()
    out = reports / f"kefu-report-{today.isoformat()}.md"
    token = keyring.issue("demo-supervisor", Role.SUPERVISOR)
    command = [
        sys.executable,
        "-m",
        "kefu_feedback.entrypoints.cli",
        "--from",
        period["from"],
        "--to",
        period["to"],
        "--format",
        "markdown",
        "--out",
        str(out),
        "--url",
        feedback,
        "--token",
        token,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        console.print(f"[yellow]report not written: {result.stderr.strip()[-500:]}")
        return None
    html = reports / f"kefu-report-{today.isoformat()}.html"
    response = httpx.get(
        f"{feedback}/report",
        params=period,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    if response.status_code == 200:
        html.write_text(response.text)
    return out


def _show_completeness(running: list[RunningService], keyring: KeyRing) -> bool:
    """Say whether the demo showed everything: traffic through every service, every KPI."""
    idle = idle_services({svc.spec.instance: scrape(svc.spec.url).handled for svc in running})
    feedback = _url(running, "feedback")
    gaps = ["the feedback service is not running"]
    if feedback is not None:
        token = keyring.issue("demo-supervisor", Role.SUPERVISOR)
        response = httpx.get(
            f"{feedback}/kpis",
            params=_report_period(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        gaps = kpi_gaps(response.json()) if response.status_code == 200 else [response.text]
    if not idle and not gaps:
        console.print(
            "[green]every service handled traffic and every KPI of the report has a value"
        )
        return True
    if idle:
        console.print(f"[yellow]services that handled no message: {', '.join(idle)}")
    if gaps:
        console.print(f"[yellow]KPIs without a value in this run: {', '.join(gaps)}")
    return False


def _print_urls(
    running: list[RunningService], report: Path | None, logs_dir: Path, correlation_id: str
) -> None:
    console.rule("where to look")
    if report is not None:
        console.print(f"supervisor's report: {report} (and .html beside it)")
    for svc in running:
        url = svc.spec.url
        console.print(
            f"{svc.spec.instance:14} {url}/docs  {url}/asyncapi  {url}/metrics  log {svc.log_file}"
        )
    console.print(
        "follow the day's first customer message through every service (each log line also "
        f"has its trace_id): grep -h {correlation_id} {logs_dir}/*.log"
    )
