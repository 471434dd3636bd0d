"""``uv run python -m bench.steady --rate 30 --seconds 25``: CPU per journey at a fixed load.

The full run's max phase works off a backlog, so its batches are large and each journey is
cheap; below the max, records trickle in and every fetch, batch and commit serves one or two
of them. This runs the inquiry and notifier services at one open-loop rate and reports each
process's CPU per completed journey (services, Kafka, FerretDB, PostgreSQL) and the latency:
the figure to compare, run against run (interleave A and B: the machine's noise is larger
than most single changes).

Service settings can be changed for a run through the environment, as in production
(``KEFU_NOTIFIER_WEBHOOK_FETCH_GATHER_MS=0 uv run python -m bench.steady``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.payloads import shapes
from bench.pipeline import Kefu
from bench.procs import (
    CpuWindow,
    add_infra_arguments,
    bench_infra,
    delete_topics,
    server_pids,
    stop_infra,
)

RESULTS = Path(__file__).parent / "results"


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    infra = bench_infra(args)
    endpoints = await asyncio.to_thread(infra.up)
    infra_pids = server_pids(infra)
    run = datetime.now(UTC).strftime("%H%M%S")
    log_dir = infra.state_dir / "logs" / f"steady-{run}"
    log_dir.mkdir(parents=True, exist_ok=True)
    kefu = Kefu(
        run=f"st{run}",
        bootstrap=endpoints.kafka_bootstrap,
        mongodb_uri=endpoints.mongodb_uri,
        prefix=f"bench.steady{run}.",
        log_dir=log_dir,
        partitions=4,
        shapes=shapes(),
    )
    try:
        await kefu.start()
        await kefu.warm_up(20)
        window = CpuWindow({**kefu.processes(), **infra_pids}).start()
        result = await kefu.steady("steady", args.rate, args.seconds, drain_timeout=60)
        cores = window.stop()
    finally:
        await asyncio.gather(
            *(kefu.mongo.drop_database(db) for db in (kefu.inquiry_db, kefu.notifier_db))
        )
        await kefu.stop()
        await delete_topics(endpoints.kafka_bootstrap, f"bench.steady{run}.")
        await stop_infra(args, infra)
    per_s = max(result.e2e_per_s, 1e-9)
    processes = {name: c for name, c in cores.items() if name != "machine_busy"}
    return {
        "run": run,
        "rate": args.rate,
        "seconds": args.seconds,
        "completed_per_s": result.e2e_per_s,
        "completed": result.completed,
        "sent": result.sent,
        "latency_ms": result.latency_ms,
        "cpu_cores": cores,
        "cpu_ms_per_journey": {n: round(1000 * c / per_s, 2) for n, c in processes.items()},
        "cpu_ms_per_journey_total": round(1000 * sum(processes.values()) / per_s, 1),
        "note": result.note,
    }


def render(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    lines = [
        f"{r['completed_per_s']} journeys/s offered {r['rate']}/s for {r['seconds']} s"
        f" ({r['completed']}/{r['sent']} completed); latency p50 {lat['p50']:.0f},"
        f" p95 {lat['p95']:.0f}, p99 {lat['p99']:.0f} ms",
        f"CPU per journey: {r['cpu_ms_per_journey_total']} ms"
        f" (machine {r['cpu_cores']['machine_busy']:.2f} busy)",
    ]
    lines += [f"  {name:<12} {ms:7.2f} ms" for name, ms in r["cpu_ms_per_journey"].items()]
    if r["note"]:
        lines.append(f"note: {r['note']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.steady", description=__doc__)
    parser.add_argument("--rate", type=float, default=30.0, help="journeys offered per second")
    parser.add_argument("--seconds", type=float, default=25.0)
    add_infra_arguments(parser)
    args = parser.parse_args()
    started = time.monotonic()
    results = asyncio.run(measure(args))
    path = RESULTS / f"steady-{results['run']}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    print(f"\nJSON: {path} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
