"""The dependency outage test: the store, then the broker, away for a while under traffic.

While a dependency is away every service must say so on /readyz (503), keep the work it has
accepted (records on the broker; HTTP requests it answered 202), and once the dependency is
back become ready again by itself, without a restart, and finish that work. A third phase
stalls the store (SIGSTOP: connections open, no answers) to see whether requests are bounded
in time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kefu_local.infra import LocalInfra
from kefu_shared import topics

from .fleet import Fleet, Log, bring_up, delete_topics, stop_component
from .traffic import Producer, TopicLog, inquiry_messages

PUSH_CHANNELS = ("email", "social", "marketplace")  # POSTed to /messages by their adapters


@dataclass(frozen=True)
class OutageConfig:
    outage_seconds: float = 30.0
    messages: int = 30  # per phase, on the broker and over HTTP each
    stall_seconds: float = 10.0
    http_bound_seconds: float = 8.0  # a request must be answered within this, store or not
    converge_seconds: float = 180.0
    seed: int = 13


@dataclass
class PhaseResult:
    name: str
    not_ready_seen: dict[str, bool] = field(default_factory=dict)
    ready_again_after: dict[str, float] = field(default_factory=dict)
    restarted: list[str] = field(default_factory=list)
    produced: list[str] = field(default_factory=list)  # message ids on the broker
    accepted: list[str] = field(default_factory=list)  # message ids answered 202 over HTTP
    http_statuses: Counter[int] = field(default_factory=Counter)
    http_errors: Counter[str] = field(default_factory=Counter)  # no answer: why
    slowest_http_seconds: float = 0.0
    lost: list[str] = field(default_factory=list)


@dataclass
class OutageReport:
    phases: list[PhaseResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stalled_http_seconds: float = 0.0
    stalled_http_status: int = 0
    stuck_producer_lines: dict[str, int] = field(default_factory=dict)

    def phase(self, name: str) -> PhaseResult:
        return next(p for p in self.phases if p.name == name)

    def lines(self) -> list[str]:
        out: list[str] = []
        for p in self.phases:
            out.append(f"  {p.name}:")
            out.append(
                "    reported not ready: "
                + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in p.not_ready_seen.items())
            )
            out.append(
                "    ready again after (s): "
                + ", ".join(f"{k}={v:.0f}" for k, v in p.ready_again_after.items())
            )
            out.append(f"    records produced during the outage: {len(p.produced)}")
            out.append(f"    HTTP answers during the outage: {dict(p.http_statuses)}")
            if p.http_errors:
                out.append(f"    HTTP requests without an answer: {dict(p.http_errors)}")
            out.append(f"    slowest HTTP answer: {p.slowest_http_seconds:.1f}s")
            out.append(f"    messages accepted over HTTP (202): {len(p.accepted)}")
            out.append(f"    accepted work lost: {len(p.lost)}")
            out.append(f"    processes restarted: {len(p.restarted)}")
        if self.stalled_http_seconds:
            out.append(
                f"  stalled store (SIGSTOP): GET answered {self.stalled_http_status} after "
                f"{self.stalled_http_seconds:.1f}s"
            )
        if self.stuck_producer_lines:
            out.append(f"  log lines OutOfOrderSequenceNumber: {self.stuck_producer_lines}")
        out += [f"  PROBLEM {p}" for p in self.problems] or ["  problems: none"]
        return out


async def _post_messages(
    fleet: Fleet, messages: list[Any], result: PhaseResult, http: httpx.AsyncClient
) -> None:
    """POST customer messages the way a push channel's adapter does, one after another."""
    url = f"{fleet.url('inquiry-other')}/messages"
    for case, record in messages:
        body = json.loads(record.value or b"{}")["data"]
        t = time.monotonic()
        try:
            # A connection each: after a 500 the server closes the connection, and a pooled
            # one would then fail on the client's side (ReadError), not the server's.
            r = await http.post(url, json=body, timeout=30, headers={"Connection": "close"})
            status = r.status_code
        except httpx.HTTPError as exc:
            status = 0
            result.http_errors[type(exc).__name__] += 1
        result.slowest_http_seconds = max(result.slowest_http_seconds, time.monotonic() - t)
        result.http_statuses[status] += 1
        if status == 202:
            result.accepted.append(case.message_id)


async def _watch_not_ready(
    fleet: Fleet, result: PhaseResult, dependency: str, until: float
) -> None:
    """Poll every instance's /readyz until each said 503 with the dependency false."""
    loop = asyncio.get_running_loop()
    result.not_ready_seen = dict.fromkeys(fleet.instances, False)

    async def probe(name: str) -> None:
        status, body = await asyncio.to_thread(fleet.readiness, name, 6.0)
        checks = body.get("checks") or {}
        if status == 503 and checks.get(dependency) is False:
            result.not_ready_seen[name] = True

    # All at once: a readiness probe waits for the store's server selection timeout (5 s).
    while loop.time() < until and not all(result.not_ready_seen.values()):
        await asyncio.gather(*(probe(n) for n, seen in result.not_ready_seen.items() if not seen))
        await asyncio.sleep(0.5)


async def _wait_ready_again(
    fleet: Fleet,
    result: PhaseResult,
    since: float,
    timeout: float,
    pids: dict[str, int | None],
) -> None:
    loop = asyncio.get_running_loop()
    pending = set(fleet.instances)
    deadline = loop.time() + timeout
    while pending and loop.time() < deadline:
        for name in sorted(pending):
            if await asyncio.to_thread(fleet.is_ready, name):
                result.ready_again_after[name] = loop.time() - since
                pending.discard(name)
        await asyncio.sleep(0.5)
    result.restarted = [n for n, i in fleet.instances.items() if i.pid != pids[n] or not i.alive()]


async def _phase(
    fleet: Fleet,
    infra: LocalInfra,
    dependency: str,
    config: OutageConfig,
    rng: random.Random,
    pids: dict[str, int | None],
    log: Log,
) -> PhaseResult:
    result = PhaseResult(f"{dependency} away {config.outage_seconds:.0f}s")
    loop = asyncio.get_running_loop()
    tag = f"{fleet.token}{dependency[:1]}"
    on_broker = inquiry_messages(tag + "k", config.messages, rng)
    over_http = [
        m
        for m in inquiry_messages(tag + "h", config.messages * 3, rng)
        if m[0].channel in PUSH_CHANNELS
    ][: config.messages]
    producer = Producer(infra.endpoints.kafka_bootstrap, fleet.prefix)
    await producer.start()
    try:
        if dependency == "kafka":
            # Records the services have not read yet when the broker goes.
            await producer.send([r for _, r in on_broker])
            result.produced = [c.message_id for c, _ in on_broker]
        log(f"stopping {dependency}")
        await asyncio.to_thread(stop_component, infra, dependency)
        t0 = loop.time()
        until = t0 + config.outage_seconds
        watch = asyncio.create_task(_watch_not_ready(fleet, result, dependency, until))
        if dependency == "mongodb":
            # The broker accepts the records; the services must process them once the store is back.
            await producer.send([r for _, r in on_broker])
            result.produced = [c.message_id for c, _ in on_broker]
        # Without the store each POST waits for its timeout: a few show the answer.
        posts = over_http if dependency == "kafka" else over_http[:3]
        async with httpx.AsyncClient(headers=fleet.auth()) as http:
            await _post_messages(fleet, posts, result, http)
        await watch
        await asyncio.sleep(max(0.0, until - loop.time()))
        log(f"starting {dependency} again after {loop.time() - t0:.0f}s")
        await asyncio.to_thread(bring_up, infra)
        back = loop.time()
        await _wait_ready_again(fleet, result, back, config.converge_seconds, pids)
    finally:
        await producer.stop()
    return result


async def _lost(fleet: Fleet, infra: LocalInfra, phases: list[PhaseResult], seconds: float) -> None:
    reader = TopicLog(infra.endpoints.kafka_bootstrap, fleet.prefix, [topics.INQUIRY_EVENTS])
    await reader.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while True:
            await reader.poll(3.0)
            # Spam is recorded too, as inquiry.spam_filtered instead of inquiry.received.
            received = {
                str((e.get("data") or {}).get("message_id"))
                for e in reader.envelopes(topics.INQUIRY_EVENTS)
                if e.get("type") in ("inquiry.received", "inquiry.spam_filtered")
            }
            for p in phases:
                p.lost = sorted(set(p.produced + p.accepted) - received)
            if not any(p.lost for p in phases) or loop.time() > deadline:
                return
    finally:
        await reader.stop()


async def _stalled_store(
    fleet: Fleet, infra: LocalInfra, config: OutageConfig, report: OutageReport
) -> None:
    """SIGSTOP FerretDB: its port stays open, nothing answers. How long does a read wait?"""
    pid = infra.ferretdb.running_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        t = time.monotonic()
        try:
            async with httpx.AsyncClient(headers=fleet.auth()) as http:
                r = await http.get(
                    f"{fleet.url('inquiry-chat')}/inquiries/never-there",
                    timeout=config.stall_seconds + 20,
                )
                report.stalled_http_status = r.status_code
        except httpx.HTTPError:
            report.stalled_http_status = 0
        report.stalled_http_seconds = time.monotonic() - t
    finally:
        os.kill(pid, signal.SIGCONT)


async def run_outage(
    infra: LocalInfra, workdir: Path, config: OutageConfig, log: Log = print
) -> OutageReport:
    """The outage scenario with a fleet of its own, on ``infra`` (already up)."""
    fleet = Fleet(infra.endpoints, workdir)
    try:
        fleet.start_all()
        await asyncio.to_thread(fleet.wait_ready, None, 300.0)
        return await outage_scenario(fleet, infra, config, log)
    finally:
        fleet.stop_all()
        fleet.drop_databases()
        await delete_topics(infra.endpoints.kafka_bootstrap, fleet.prefix)


async def outage_scenario(
    fleet: Fleet, infra: LocalInfra, config: OutageConfig, log: Log = print
) -> OutageReport:
    """Store away, broker away, store stalled, on a running ``fleet``."""
    await asyncio.to_thread(fleet.wait_ready, None, 300.0)
    rng = random.Random(config.seed)
    report = OutageReport()
    pids = {name: inst.pid for name, inst in fleet.instances.items()}
    for dependency in ("mongodb", "kafka"):
        phase = await _phase(fleet, infra, dependency, config, rng, pids, log)
        report.phases.append(phase)
        # Judged before the next phase, so one phase's damage is not blamed on the other.
        await _lost(fleet, infra, [phase], config.converge_seconds)
    if config.stall_seconds:
        # SIGCONT after stall_seconds: a read still waiting then shows the missing timeout.
        task = asyncio.create_task(_stalled_store(fleet, infra, config, report))
        await asyncio.sleep(config.stall_seconds)
        pid = infra.ferretdb.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        await task
        await asyncio.to_thread(fleet.wait_ready, None, 120.0)
    report.stuck_producer_lines = {
        name: n
        for name in fleet.instances
        if (n := sum(1 for line in fleet.log_lines(name) if "OutOfOrderSequence" in line))
    }
    for p in report.phases:
        missing = [n for n, seen in p.not_ready_seen.items() if not seen]
        if missing:
            report.problems.append(f"{p.name}: never reported not ready: {missing}")
        late = [n for n in fleet.instances if n not in p.ready_again_after]
        if late:
            report.problems.append(f"{p.name}: not ready again by itself: {late}")
        if p.restarted:
            report.problems.append(f"{p.name}: processes died: {p.restarted}")
        if p.lost:
            report.problems.append(f"{p.name}: accepted work lost: {len(p.lost)} {p.lost[:5]}")
    return report
