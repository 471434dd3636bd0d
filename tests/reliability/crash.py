"""The crash test: traffic through all five services while they are SIGKILLed and restarted at
random (seeded) moments and the broker restarts once; then every outcome is checked through
the services' public outputs (event topics, the notifier's delivery log, HTTP reads)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kefu_local.infra import LocalInfra
from kefu_shared import topics

from .checks import changes_under_two_ids, distinct_ids_by, provider_calls, republished
from .fleet import SERVICES, Fleet, Log, delete_topics, restart_component
from .postmortem import diagnose_lost
from .traffic import (
    BOT_ARTICLE,
    InquiryCase,
    OrderCase,
    Outbound,
    Produced,
    Producer,
    Record,
    TopicLog,
    inquiry_messages,
    interleave,
    orders,
)

EVENT_TOPICS = (
    topics.INQUIRY_EVENTS,
    topics.ORDERS_EVENTS,
    topics.AFTERSALES_EVENTS,
    topics.FEEDBACK_EVENTS,
    topics.NOTIFIER_EVENTS,
)
DLQ_TOPICS = tuple(topics.dead_letter_topic(s) for s in SERVICES)
FINAL_ORDER_EVENT = {
    "delivered": ("order.follow_up_closed", "delivered"),
    "cancelled": ("order.follow_up_closed", "cancelled"),
    "refunded": ("order.refunded", None),
}
TERMINAL_NOTICES = ("notification.sent", "notification.failed", "notification.suppressed")


@dataclass(frozen=True)
class CrashConfig:
    inquiries: int = 300
    orders: int = 60
    kills_per_instance: int = 1
    broker_restarts: int = 1
    traffic_seconds: float = 40.0
    converge_seconds: float = 180.0
    http_sample: int = 10_000  # inquiries and orders read back over HTTP (all, when fewer)
    seed: int = 13


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the traffic started
    kind: str  # kill | broker
    target: str = ""


@dataclass
class CrashReport:
    counts: dict[str, int] = field(default_factory=dict)
    findings: dict[str, list[str]] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    # (ref, kind, topic, partition, offset) of every record the traffic produced: where to
    # look for a lost one in a post-mortem
    produced: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    # Where the lost messages went (postmortem.py), looked up before the data is dropped.
    postmortem: list[str] = field(default_factory=list)

    def problem(self, what: str, items: list[str]) -> None:
        if items:
            self.findings[what] = sorted(items)

    @property
    def problems(self) -> list[str]:
        return [f"{k}: {len(v)} (e.g. {v[:5]})" for k, v in self.findings.items()]

    def lines(self) -> list[str]:
        out = [f"  {k:<48} {v}" for k, v in self.counts.items()]
        out += [f"  fault: {f}" for f in self.faults]
        out += [f"  PROBLEM {p}" for p in self.problems] or ["  problems: none"]
        out += [f"  post-mortem: {line}" for line in self.postmortem]
        return out


def plan_faults(instances: list[str], config: CrashConfig, rng: random.Random) -> list[Fault]:
    """The broker restarted early in the traffic window; then each instance killed
    ``kills_per_instance`` times, once in each of as many equal slots of the window, counted
    from the broker's return.

    Every process is killed after the broker restart on purpose: a process that lives through
    a broker restart can keep a producer that fails every publish from then on (the kernel bug
    the outage test shows), and this test is about crashes, not about that bug.
    """
    window = config.traffic_seconds
    faults: list[Fault] = []
    for _ in range(config.broker_restarts):
        faults.append(Fault(rng.uniform(0.05 * window, 0.2 * window), "broker"))
    k = config.kills_per_instance
    for name in instances:
        for slot in range(k):
            lo = window * (0.05 + 0.9 * slot / k)
            hi = window * (0.05 + 0.9 * (slot + 1) / k)
            faults.append(Fault(rng.uniform(lo, hi), "kill", name))
    return sorted(faults, key=lambda f: (f.kind != "broker", f.at))


async def _chaos(
    fleet: Fleet,
    infra: LocalInfra,
    faults: list[Fault],
    started: float,
    report: CrashReport,
    log: Log,
) -> None:
    """Broker restarts at their moments; kills at theirs, counted from the broker's return."""
    loop = asyncio.get_running_loop()
    back = started
    for fault in (f for f in faults if f.kind == "broker"):
        await asyncio.sleep(max(0.0, started + fault.at - loop.time()))
        t = loop.time() - started
        log(f"[{t:6.1f}s] stopping the Kafka broker")
        await asyncio.to_thread(restart_component, infra, "kafka")
        back = loop.time()
        report.faults.append(
            f"{t:6.1f}s Kafka broker stopped, answering again at {back - started:.1f}s"
        )
        log(f"[{back - started:6.1f}s] Kafka broker back")

    async def kill(fault: Fault) -> None:
        await asyncio.sleep(max(0.0, back + fault.at - loop.time()))
        t = loop.time() - started
        await asyncio.to_thread(fleet.restart, fault.target)
        log(f"[{t:6.1f}s] SIGKILL {fault.target}, restarted")
        report.faults.append(f"{t:6.1f}s SIGKILL + restart {fault.target}")

    await asyncio.gather(*(kill(f) for f in faults if f.kind == "kill"))


async def _traffic(
    producer: Producer,
    stream: list[Outbound],
    seconds: float,
    started: float,
    produced: list[Produced],
) -> None:
    """Send the stream in small batches spread evenly over ``seconds``."""
    loop = asyncio.get_running_loop()
    batches = max(1, int(seconds * 2))
    size = max(1, -(-len(stream) // batches))
    for n, i in enumerate(range(0, len(stream), size)):
        produced += await producer.send(stream[i : i + size])
        await asyncio.sleep(max(0.0, started + (n + 1) * seconds / batches - loop.time()))


class Outcomes:
    """What the topics say about the run, recomputed as records arrive."""

    def __init__(
        self, reader: TopicLog, inquiries: list[InquiryCase], order_cases: list[OrderCase]
    ) -> None:
        self.reader = reader
        self.inquiries = inquiries
        self.orders = order_cases

    def evaluate(self) -> dict[str, Any]:
        inq = self.reader.envelopes(topics.INQUIRY_EVENTS)
        ords = self.reader.envelopes(topics.ORDERS_EVENTS)
        notes = self.reader.envelopes(topics.NOTIFIER_EVENTS)
        requests = self.reader.envelopes(topics.NOTIFICATION_REQUESTS)
        received = distinct_ids_by(inq, "inquiry.received", "message_id")
        spam = distinct_ids_by(inq, "inquiry.spam_filtered", "message_id")
        inquiry_of = {
            str(e["data"]["message_id"]): str(e["data"]["inquiry_id"])
            for e in inq
            if e.get("type") in ("inquiry.received", "inquiry.spam_filtered")
        }
        classified = distinct_ids_by(inq, "inquiry.classified", "inquiry_id")
        answered = distinct_ids_by(inq, "inquiry.auto_answered", "inquiry_id")

        lost_messages, twice_messages, unclassified, unanswered = [], [], [], []
        for case in self.inquiries:
            seen = spam if case.kind == "spam" else received
            ids = seen.get(case.message_id, set())
            if not ids:
                lost_messages.append(case.message_id)
                continue
            if len(ids) > 1:
                twice_messages.append(case.message_id)
            inquiry_id = inquiry_of.get(case.message_id, "")
            if case.kind != "spam" and len(classified.get(inquiry_id, ())) != 1:
                unclassified.append(inquiry_id)
            if case.kind == "bot" and len(answered.get(inquiry_id, ())) != 1:
                unanswered.append(inquiry_id)

        final_ids: dict[str, set[str]] = {}
        for e in ords:
            d = e.get("data") or {}
            tag = (e.get("type"), d.get("reason"))
            final_ids.setdefault(f"{d.get('order_id')}|{tag[0]}|{tag[1]}", set()).add(e["id"])
        missing_final, twice_final = [], []
        for o in self.orders:
            etype, reason = FINAL_ORDER_EVENT[o.lifecycle]
            ids = final_ids.get(f"{o.order_id}|{etype}|{reason}", set())
            if not ids:
                missing_final.append(o.order_id)
            elif len(ids) > 1:
                twice_final.append(o.order_id)

        requested = {str((r.get("data") or {}).get("idempotency_key")) for r in requests}
        terminal: dict[str, set[str]] = {}
        sent: dict[str, set[str]] = {}
        for e in notes:
            if e.get("type") in TERMINAL_NOTICES:
                key = str(e["data"]["idempotency_key"])
                terminal.setdefault(key, set()).add(e["id"])
                if e.get("type") == "notification.sent":
                    sent.setdefault(key, set()).add(e["id"])
        # A lost message's bot answer is not expected twice over: it is reported as lost.
        expected_keys = {
            f"{inquiry_of[c.message_id]}:bot:1"
            for c in self.inquiries
            if c.kind == "bot" and c.message_id in inquiry_of
        }
        shipped = {o.order_id for o in self.orders if o.lifecycle == "delivered"}
        shipping_keys = {
            k
            for k in requested
            if k.startswith("orders:") and k.split(":")[1] in shipped and ":shipped:" in k
        }
        return {
            "inquiry_events": inq,
            "order_events": ords,
            "notifier_events": notes,
            "requests": requests,
            "inquiry_of": inquiry_of,
            "lost_messages": lost_messages,
            "twice_messages": twice_messages,
            "unclassified": unclassified,
            "unanswered": unanswered,
            "missing_final": missing_final,
            "twice_final": twice_final,
            "requested": requested,
            "unfinished_notices": sorted(requested - set(terminal)),
            "twice_terminal": [k for k, v in terminal.items() if len(v) > 1],
            "sent": sent,
            "twice_sent": [k for k, v in sent.items() if len(v) > 1],
            "expected_unsent": sorted(k for k in expected_keys if k not in sent),
            "shipping_keys": shipping_keys,
            "shipping_unsent": sorted(
                o
                for o in shipped
                if not any(k.split(":")[1] == o for k in shipping_keys if k in sent)
            ),
            "terminal": terminal,
        }

    def done(self, state: dict[str, Any]) -> bool:
        return not (
            state["lost_messages"]
            or state["unclassified"]
            or state["unanswered"]
            or state["missing_final"]
            or state["unfinished_notices"]
            or state["expected_unsent"]
            or state["shipping_unsent"]
        )


async def run_crash(
    infra: LocalInfra,
    workdir: Path,
    config: CrashConfig,
    log: Log = print,
    *,
    keep_data: bool = False,
) -> CrashReport:
    """The whole crash scenario with a fleet of its own, on ``infra`` (already up).

    ``keep_data`` leaves the run's databases and topics in place for a post-mortem (their
    names are logged: databases ``rel_<token>_<service>``, topics ``rel<token>.*``)."""
    fleet = Fleet(infra.endpoints, workdir)
    try:
        log(
            f"starting {len(fleet.instances)} service processes (topics {fleet.prefix}*, "
            f"databases {fleet.database('<service>')})"
        )
        fleet.start_all()
        await asyncio.to_thread(fleet.wait_ready, None, 300.0)
        return await crash_scenario(fleet, infra, config, log)
    finally:
        fleet.stop_all()
        if keep_data:
            log(f"kept databases {fleet.database('<service>')} and topics {fleet.prefix}*")
        else:
            fleet.drop_databases()
            await delete_topics(infra.endpoints.kafka_bootstrap, fleet.prefix)


async def crash_scenario(
    fleet: Fleet, infra: LocalInfra, config: CrashConfig, log: Log = print
) -> CrashReport:
    """Traffic, kills and a broker restart on a running ``fleet``; then the outcomes."""
    rng = random.Random(config.seed)
    report = CrashReport()
    started_at = time.monotonic()
    kills_before = sum(i.kills for i in fleet.instances.values())
    inquiry = fleet.first("inquiry").spec.name
    async with httpx.AsyncClient(timeout=30, headers=fleet.auth()) as http:
        r = await http.post(f"{fleet.url(inquiry)}/knowledge-base/articles", json=BOT_ARTICLE)
        r.raise_for_status()

    token = f"{fleet.token}x{config.seed}"
    messages = inquiry_messages(token, config.inquiries, rng)
    order_list = orders(token, config.orders, rng)
    stream = interleave([m for _, m in messages], [steps for _, steps in order_list], rng)
    faults = plan_faults(list(fleet.instances), config, rng)
    log(
        f"sending {len(stream)} records over {config.traffic_seconds:.0f}s with "
        f"{len(faults)} faults"
    )
    producer = Producer(infra.endpoints.kafka_bootstrap, fleet.prefix)
    await producer.start()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    produced: list[Produced] = []
    try:
        await asyncio.gather(
            _traffic(producer, stream, config.traffic_seconds, t0, produced),
            _chaos(fleet, infra, faults, t0, report, log),
        )
    finally:
        await producer.stop()
    log(f"traffic and faults done after {loop.time() - t0:.0f}s; waiting for the outcomes")
    for name, inst in fleet.instances.items():
        if not inst.alive():
            report.findings.setdefault("not running after the faults", []).append(name)
            fleet.start(name)
    await asyncio.to_thread(fleet.wait_ready, None, 300.0)

    reader = TopicLog(
        infra.endpoints.kafka_bootstrap,
        fleet.prefix,
        [*EVENT_TOPICS, topics.NOTIFICATION_REQUESTS, *DLQ_TOPICS],
    )
    await reader.start()
    outcomes = Outcomes(reader, [c for c, _ in messages], [c for c, _ in order_list])
    try:
        deadline = loop.time() + config.converge_seconds
        state = outcomes.evaluate()
        while loop.time() < deadline:
            await reader.poll(3.0)
            state = outcomes.evaluate()
            if outcomes.done(state):
                break
        converged = loop.time()
        # Late records: duplicates, and requests that follow an outcome by design (a survey
        # invitation some seconds after a bot answer): while one of those is unfinished, wait
        # for it rather than judge it never finished.
        while True:
            await reader.poll(5.0)
            state = outcomes.evaluate()
            if outcomes.done(state) or loop.time() >= deadline:
                break
    finally:
        await reader.stop()
    log(f"outcomes settled {converged - t0:.0f}s after the traffic started")
    ours = {(p.topic, p.partition, p.offset) for p in produced}
    report.produced = [
        (p.record.ref, p.record.kind, p.topic, p.partition, p.offset) for p in produced
    ]
    await _judge(fleet, reader, outcomes, state, ours, config, rng, report)
    if state["lost_messages"]:
        await _postmortem(fleet, state["lost_messages"], report)
    kills = sum(i.kills for i in fleet.instances.values()) - kills_before
    report.counts["faults: SIGKILL + restart"] = kills
    report.counts["faults: broker restarts"] = config.broker_restarts
    report.counts["producer retries (broker away)"] = producer.retries
    report.counts["seconds: traffic start to all outcomes"] = int(converged - t0)
    report.counts["seconds: whole scenario"] = int(time.monotonic() - started_at)
    return report


async def _postmortem(fleet: Fleet, lost: list[str], report: CrashReport) -> None:
    """Place each lost message (inbound topic, store, outbox, committed offsets) while the
    fleet's data is still there: a loss that shows once in many runs explains itself."""
    try:
        diagnosis = await diagnose_lost(
            bootstrap=fleet.endpoints.kafka_bootstrap,
            mongodb_uri=fleet.endpoints.mongodb_uri,
            prefix=fleet.prefix,
            database=fleet.database("inquiry"),
            group_prefix=f"rel{fleet.token}",
            lost=lost,
            sent=report.produced,
        )
    except Exception as exc:  # a diagnosis must never hide the finding itself
        report.postmortem.append(f"failed: {exc!r}")
        return
    for place, n in diagnosis.where.most_common():
        report.counts[f"lost messages: {place}"] = n
    report.postmortem += diagnosis.offsets + diagnosis.lines


async def _judge(
    fleet: Fleet,
    reader: TopicLog,
    outcomes: Outcomes,
    state: dict[str, Any],
    ours: set[tuple[str, int, int]],
    config: CrashConfig,
    rng: random.Random,
    report: CrashReport,
) -> None:
    c = report.counts
    kinds = Counter(case.kind for case in outcomes.inquiries)
    c["inquiries sent"] = len(outcomes.inquiries)
    c["inquiries: bot-answerable"] = kinds["bot"]
    c["inquiries: spam"] = kinds["spam"]
    c["inquiries received (inquiry.received/spam_filtered)"] = len(outcomes.inquiries) - len(
        state["lost_messages"]
    )
    c["orders sent"] = len(outcomes.orders)
    c["orders in their final state (by event)"] = len(outcomes.orders) - len(state["missing_final"])
    c["notifications requested (idempotency keys)"] = len(state["requested"])
    c["notifications sent (keys)"] = len(state["sent"])
    c["notifications failed/suppressed (keys)"] = len(state["terminal"]) - len(state["sent"])
    all_events = [e for t in EVENT_TOPICS for e in reader.envelopes(t)]
    c["events read on the five event topics"] = len(all_events)
    c["events re-published with the same id (allowed)"] = republished(all_events)
    twice = changes_under_two_ids(all_events)
    c["changes published under two ids"] = len(twice)
    c["log lines: OutOfOrderSequenceNumber (stuck producer)"] = sum(
        1
        for name in fleet.instances
        for line in fleet.log_lines(name)
        if "OutOfOrderSequence" in line
    )
    calls = provider_calls(fleet.log_lines("notifier"))
    c["provider calls repeated for one delivery id"] = sum(n - 1 for n in calls.values() if n > 1)
    # Dead letters of this scenario's records and of any event (a fleet shared with the
    # poison test also holds that test's dead letters of inbound records).
    events = {fleet.topic(t) for t in EVENT_TOPICS}

    def counts(r: Record) -> bool:
        h = r.headers
        origin = h.get("x-original-topic", "")
        at = (origin, int(h.get("x-original-partition", -1)), int(h.get("x-original-offset", -1)))
        return origin in events or at in ours

    dlq = {t: sum(1 for r in reader.records.get(t, []) if counts(r)) for t in DLQ_TOPICS}
    c["dead-lettered records"] = sum(dlq.values())

    report.problem("messages never received", state["lost_messages"])
    report.problem("messages received twice", state["twice_messages"])
    report.problem("inquiries not classified exactly once", state["unclassified"])
    report.problem("bot answers missing", state["unanswered"])
    report.problem("orders without their final event", state["missing_final"])
    report.problem("orders with the final event twice", state["twice_final"])
    report.problem("notifications never finished", state["unfinished_notices"])
    report.problem("notifications finished twice", state["twice_terminal"])
    report.problem("notifications sent twice", state["twice_sent"])
    report.problem("expected bot answers not sent", state["expected_unsent"])
    report.problem("shipping notices not sent", state["shipping_unsent"])
    report.problem("changes published under two ids", [str(k[:2]) for k in twice])
    report.problem("dead-lettered", [f"{t}: {n}" for t, n in dlq.items() if n])

    # HTTP reads: what an agent or a supervisor would look up.
    expected_status = {"bot": "resolved", "spam": "spam", "question": "queued"}
    inquiries = list(outcomes.inquiries)
    orders_ = list(outcomes.orders)
    if len(inquiries) > config.http_sample:
        inquiries = rng.sample(inquiries, config.http_sample)
    if len(orders_) > config.http_sample:
        orders_ = rng.sample(orders_, config.http_sample)
    wrong_inquiries: list[str] = []
    wrong_orders: list[str] = []
    wrong_deliveries: list[str] = []
    inquiry_url = fleet.url(fleet.first("inquiry").spec.name)
    async with httpx.AsyncClient(timeout=30, headers=fleet.auth()) as http:
        sem = asyncio.Semaphore(8)

        async def get(url: str) -> httpx.Response:
            async with sem:
                return await http.get(url)

        async def check_inquiry(case: InquiryCase) -> None:
            inquiry_id = state["inquiry_of"].get(case.message_id)
            if inquiry_id is None:
                return  # already reported lost
            r = await get(f"{inquiry_url}/inquiries/{inquiry_id}")
            if r.status_code != 200 or r.json().get("status") != expected_status[case.kind]:
                wrong_inquiries.append(f"{inquiry_id}:{r.status_code}:{r.text[:60]}")

        async def check_order(case: OrderCase) -> None:
            r = await get(f"{fleet.url('orders')}/orders/{case.order_id}")
            if r.status_code != 200 or r.json().get("status") != case.lifecycle:
                wrong_orders.append(f"{case.order_id}:{r.status_code}:{r.text[:60]}")

        async def check_delivery(key: str) -> None:
            r = await get(f"{fleet.url('notifier')}/deliveries/{key}")
            if r.status_code != 200 or r.json().get("status") != "sent":
                wrong_deliveries.append(f"{key}:{r.status_code}:{r.text[:60]}")

        await asyncio.gather(*(check_inquiry(i) for i in inquiries))
        await asyncio.gather(*(check_order(o) for o in orders_))
        await asyncio.gather(*(check_delivery(k) for k in sorted(state["sent"])))
    c["inquiries read over HTTP"] = len(inquiries)
    c["orders read over HTTP"] = len(orders_)
    c["deliveries read over HTTP"] = len(state["sent"])
    report.problem("inquiries in the wrong state over HTTP", wrong_inquiries)
    report.problem("orders in the wrong state over HTTP", wrong_orders)
    report.problem("sent deliveries not 'sent' over HTTP", wrong_deliveries)
