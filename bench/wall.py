"""``uv run python -m bench.wall``: where one message's wall time goes, inside each service.

The services' own use cases run in this process against the benchmark's FerretDB and Kafka, one
message at a time as the consumer runs them: the inquiry's ``receive_message`` and its outbox
relay, then the notifier's ``accept_request``, its dispatch of the due delivery and its relay.
Every store command is timed with a PyMongo command listener (per step, command and collection),
and pyinstrument (async mode: time spent awaiting is charged to the awaiting coroutine) writes
the call tree to ``bench/results/wall-<id>-<service>.txt``.

``--stored N`` first loads N resolved inquiries (the service's document shape), to see which
commands get slower as the data grows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import gc
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kefu_shared import topics
from pymongo import monitoring

from bench import store_costs
from bench.payloads import ARTICLE, customer_message, shapes
from bench.procs import (
    STORE_SERVERS,
    add_infra_arguments,
    bench_infra,
    create_topics,
    delete_topics,
    server_pids,
    stop_infra,
)

RESULTS = Path(__file__).parent / "results"
if os.environ.get("BENCH_TOOLS"):
    # py-spy and pyinstrument installed with `uv pip install --target $BENCH_TOOLS ...`, out of
    # the venv (which `uv sync` trims back to the lock file).
    sys.path.append(os.environ["BENCH_TOOLS"])
STEP: contextvars.ContextVar[str] = contextvars.ContextVar("bench_step", default="(background)")
T = TypeVar("T")


class CommandTimes(monitoring.CommandListener):
    """Count and time every store command, by the step that issued it."""

    def __init__(self) -> None:
        self.count: dict[tuple[str, str, str], int] = defaultdict(int)
        self.micros: dict[tuple[str, str, str], int] = defaultdict(int)
        self._pending: dict[int, tuple[str, str, str]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        collection = event.command.get(event.command_name)
        name = collection if isinstance(collection, str) else ""
        self._pending[event.request_id] = (STEP.get(), event.command_name, name)

    def _done(self, event: Any) -> None:
        key = self._pending.pop(event.request_id, None)
        if key is not None:
            self.count[key] += 1
            self.micros[key] += event.duration_micros

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event)

    def table(self, step_prefix: str, messages: int) -> list[dict[str, Any]]:
        rows = [
            {
                "step": step,
                "command": command,
                "collection": collection,
                "per_message": round(self.count[k] / messages, 2),
                "ms_per_message": round(self.micros[k] / 1000 / messages, 2),
                "ms_each": round(self.micros[k] / 1000 / self.count[k], 2),
            }
            for k in self.count
            for step, command, collection in [k]
            if step.startswith(step_prefix)
        ]
        return sorted(rows, key=lambda r: -r["ms_per_message"])


def _find(kind: type[T], where: Callable[[T], bool] = lambda _: True) -> T:
    """The one live object of ``kind`` that the composition root just built (the apps do not
    all expose their dependencies, and this tool must not change them)."""
    found = [o for o in gc.get_objects() if isinstance(o, kind) and where(o)]
    if len(found) != 1:
        raise RuntimeError(f"expected one {kind.__name__}, found {len(found)}")
    return found[0]


async def _timed(label: str, step: Callable[[], Awaitable[Any]], wall: dict[str, float]) -> None:
    token = STEP.set(label)
    started = time.perf_counter()
    try:
        await step()
    finally:
        wall[label] = wall.get(label, 0.0) + time.perf_counter() - started
        STEP.reset(token)


async def profile_inquiry(
    bootstrap: str, uri: str, run: str, messages: int, stored: int, listener: CommandTimes
) -> dict[str, Any]:
    from kefu_inquiry import handlers
    from kefu_inquiry.adapters import mongo as inquiry_mongo
    from kefu_inquiry.bootstrap import create_app
    from kefu_inquiry.settings import InquirySettings
    from kefu_shared.runtime import ServiceRuntime
    from pyinstrument import Profiler

    prefix = f"bench.wall{run}.i."
    settings = InquirySettings(
        kafka_bootstrap_servers=bootstrap,
        mongodb_uri=uri,
        mongodb_database=f"bench_wall{run}_inquiry",
        topic_prefix=prefix,
        channels="chat",
    )
    await create_topics(
        bootstrap,
        dict.fromkeys(
            [
                prefix + topics.inbound_channel_topic("chat"),
                prefix + topics.INQUIRY_EVENTS,
                prefix + topics.NOTIFICATION_REQUESTS,
            ],
            4,
        ),
    )
    app = create_app(settings)
    runtime: ServiceRuntime = app.state.runtime
    deps: handlers.Deps = app.state.deps
    db = runtime.db
    await db[inquiry_mongo.ARTICLES].replace_one(
        {"_id": "bench"}, {"id": "bench", **ARTICLE, "enabled": True}, upsert=True
    )
    if stored:
        shape = shapes()
        for i in range(0, stored, 1000):
            docs = [
                shape.inquiry_doc(f"pre-{j}", relayed=True) for j in range(i, min(stored, i + 1000))
            ]
            await db[inquiry_mongo.INQUIRIES].insert_many(docs, ordered=False)
    await runtime.broker.start()
    wall: dict[str, float] = {}
    profiler = Profiler(async_mode="enabled", interval=0.0005)
    try:
        # One unmeasured message opens every connection.
        await handlers.receive_message(customer_message(-1, run), deps, handlers.Context())
        await runtime.relay.idle()
        await runtime.relay.relay_once()
        _tag_relay(runtime.relay, "inquiry: outbox relay")
        listener.count.clear()
        listener.micros.clear()
        profiler.start()
        for i in range(messages):
            message = customer_message(i, run)
            ctx = handlers.Context(correlation_id=f"{run}-{i}", causation_id=f"{run}-e{i}")
            await _timed(
                "inquiry: receive_message",
                functools.partial(handlers.receive_message, message, deps, ctx),
                wall,
            )
            await _timed("inquiry: outbox relay", runtime.relay.idle, wall)
        profiler.stop()
    finally:
        await runtime.broker.stop()
        await runtime.mongo.drop_database(settings.mongodb_database)
        await runtime.mongo.close()
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    return {
        "wall_ms_per_message": {k: round(v / messages * 1000, 1) for k, v in wall.items()},
        "commands": listener.table("inquiry", messages),
        "pyinstrument": text,
    }


async def profile_notifier(
    bootstrap: str, uri: str, run: str, messages: int, listener: CommandTimes
) -> dict[str, Any]:
    from kefu_notifier import handlers, intake
    from kefu_notifier.bootstrap import create_app
    from kefu_notifier.settings import NotifierSettings
    from kefu_shared.contracts.notifier import NotificationRequested
    from kefu_shared.runtime import ServiceRuntime
    from pyinstrument import Profiler

    prefix = f"bench.wall{run}.n."
    settings = NotifierSettings(
        kafka_bootstrap_servers=bootstrap,
        mongodb_uri=uri,
        mongodb_database=f"bench_wall{run}_notifier",
        topic_prefix=prefix,
    )
    await create_topics(
        bootstrap,
        dict.fromkeys([prefix + topics.NOTIFICATION_REQUESTS, prefix + topics.NOTIFIER_EVENTS], 4),
    )
    gc.collect()
    create_app(settings)
    runtime = _find(ServiceRuntime, lambda r: r.name == "notifier")
    deps = _find(handlers.NotifierDeps)
    template = json.loads(shapes().outbox_bodies[-1])["data"]

    def request(i: int) -> NotificationRequested:
        return NotificationRequested.model_validate(
            {**template, "idempotency_key": f"{run}:bot:{i}", "customer_id": f"{run}-c{i}"}
        )

    await runtime.broker.start()
    wall: dict[str, float] = {}
    profiler = Profiler(async_mode="enabled", interval=0.0005)
    try:
        await intake.accept_request(
            request(-1), message_id=f"{run}-w", correlation_id="warm", deps=deps
        )
        at_once: Any = deps.at_once
        if at_once is not None:
            await at_once.drain()
            _tag_at_once(at_once, "notifier: send at once")
        await handlers.dispatch_due(deps, limit=50)
        await runtime.relay.idle()
        await runtime.relay.relay_once()
        _tag_relay(runtime.relay, "notifier: outbox relay")
        listener.count.clear()
        listener.micros.clear()
        profiler.start()
        for i in range(messages):
            req = request(i)
            await _timed(
                "notifier: accept_request",
                functools.partial(
                    intake.accept_request,
                    req,
                    message_id=f"{run}-r{i}",
                    correlation_id=f"{run}-{i}",
                    deps=deps,
                ),
                wall,
            )
            if at_once is not None:  # accepted deliveries are attempted at once
                await _timed("notifier: send at once", at_once.drain, wall)
            else:
                await _timed(
                    "notifier: dispatch_due (send)",
                    lambda: handlers.dispatch_due(deps, limit=50),
                    wall,
                )
            await _timed("notifier: outbox relay", runtime.relay.idle, wall)
        profiler.stop()
    finally:
        await runtime.broker.stop()
        await runtime.mongo.drop_database(settings.mongodb_database)
        await runtime.mongo.close()
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    return {
        "wall_ms_per_message": {k: round(v / messages * 1000, 1) for k, v in wall.items()},
        "commands": listener.table("notifier", messages),
        "pyinstrument": text,
    }


def _tag_relay(relay: Any, step: str) -> None:
    """Charge the relay's hand-off tasks to the relay step: a task copies the context of the
    write that started it, which would charge its commands to the handler."""
    relay_document = relay._relay_document

    async def tagged(*args: Any, **kwargs: Any) -> int:
        STEP.set(step)
        return int(await relay_document(*args, **kwargs))

    relay._relay_document = tagged


def _tag_at_once(at_once: Any, step: str) -> None:
    """Charge the notifier's attempts at once to their own step (same reason as the relay)."""
    send = at_once._send

    async def tagged(*args: Any) -> None:
        STEP.set(step)
        await send(*args)

    at_once._send = tagged


def render(results: dict[str, Any]) -> str:
    lines = [
        f"Wall time per message, one in flight ({results['messages']} messages,"
        f" {results['stored']} stored inquiries preloaded), store {results['store_kind']}",
    ]
    for service in ("inquiry", "notifier"):
        r = results[service]
        lines.append("")
        total = sum(r["wall_ms_per_message"].values())
        lines.append(f"{service}: {total:.1f} ms per message")
        for step, ms in r["wall_ms_per_message"].items():
            lines.append(f"  {step:<34} {ms:8.1f} ms")
        store = sum(c["ms_per_message"] for c in r["commands"])
        count = sum(c["per_message"] for c in r["commands"])
        lines.append(f"  of which store commands: {count:.1f} per message, {store:.1f} ms")
        lines.append(
            f"    {'step':<32} {'command':<8} {'collection':<12} {'n/msg':>6} {'ms each':>8}"
        )
        for c in r["commands"][:14]:
            lines.append(
                f"    {c['step']:<32} {c['command']:<8} {c['collection'][:12]:<12}"
                f" {c['per_message']:>6} {c['ms_each']:>8}"
            )
    lines += ["", *render_store_bound(results["store_costs"], results["store_bound"])]
    return "\n".join(lines)


def render_store_bound(costs: dict[str, Any], bound: dict[str, Any]) -> list[str]:
    lines = [
        f"Store CPU per document (FerretDB + PostgreSQL), {store_costs.IN_FLIGHT} in flight,"
        f" batches of {store_costs.BATCH}:",
        f"  {'command':<20} {'ms CPU/doc':>10} {'docs/s':>9}",
    ]
    for kind, c in costs.items():
        lines.append(f"  {kind:<20} {c['store_cpu_ms_per_doc']:>10} {c['docs_per_s']:>9}")
    kefu, raw = bound["kefu"], bound["raw_same_io"]
    mix = ", ".join(f"{n} {kind}" for kind, n in kefu["mix"].items())
    lines.append(
        f"kefu's journey ({mix}): {kefu['store_cpu_ms_per_journey']} ms store CPU, so at most"
        f" {kefu['store_bound_per_s']} journeys/s with the store alone on {kefu['cores']} cores"
    )
    if kefu["not_measured"]:
        lines.append(f"  (not measured, left out: {', '.join(kefu['not_measured'])})")
    lines.append(
        f"raw same-I/O pipeline (4 insert_many documents): {raw['store_cpu_ms_per_journey']} ms,"
        f" at most {raw['store_bound_per_s']}/s"
    )
    if kefu["store_bound_per_s"] and raw["store_bound_per_s"]:
        ratio = kefu["store_bound_per_s"] / raw["store_bound_per_s"]
        lines.append(f"  store-bound ratio kefu / raw same-I/O: {ratio:.3f}x")
    return lines


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    infra = bench_infra(args)
    endpoints = await asyncio.to_thread(infra.up)
    store_kind = infra.store_kind()
    listener = CommandTimes()
    monitoring.register(listener)  # every client created from now on reports its commands
    run = datetime.now(UTC).strftime("%H%M%S")
    bootstrap, uri = endpoints.kafka_bootstrap, endpoints.mongodb_uri
    store_pids = {n: pid for n, pid in server_pids(infra).items() if n in STORE_SERVERS}
    try:
        inquiry = await profile_inquiry(bootstrap, uri, run, args.messages, args.stored, listener)
        notifier = await profile_notifier(bootstrap, uri, run, args.messages, listener)
        costs = await store_costs.measure(uri, f"bench_wall{run}_costs", store_pids, shapes())
    finally:
        await delete_topics(bootstrap, f"bench.wall{run}.")
        await stop_infra(args, infra)
    return {
        "run": run,
        "messages": args.messages,
        "stored": args.stored,
        "store_kind": store_kind,
        "inquiry": inquiry,
        "notifier": notifier,
        "store_costs": costs,
        "store_bound": {
            "kefu": store_costs.ceiling(costs, journey_mix(inquiry, notifier)),
            # The raw same-I/O pipeline's store work per input: 4 documents, batched inserts.
            "raw_same_io": store_costs.ceiling(costs, {"insert_many": 4}),
        },
    }


def journey_mix(*services: dict[str, Any]) -> dict[str, float]:
    """Store commands per journey by kind (insert, find, update...), over the services' steps."""
    mix: dict[str, float] = defaultdict(float)
    for service in services:
        for c in service["commands"]:
            mix[c["command"]] += c["per_message"]
    return {kind: round(n, 2) for kind, n in mix.items()}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wall", description=__doc__)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--stored", type=int, default=0, help="inquiries preloaded first")
    add_infra_arguments(parser)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"wall-{results['run']}-stored{args.stored}"
    for service in ("inquiry", "notifier"):
        Path(f"{stem}-{service}.txt").write_text(results[service].pop("pyinstrument"))
    Path(f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    print(f"\nJSON: {stem}.json; pyinstrument trees: {stem}-inquiry.txt, {stem}-notifier.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
