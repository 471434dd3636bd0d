"""The full-size reliability runs of issue 13, as a command that prints the counts.

    uv run python -m tests.reliability.full_run --crash --poison --outage --fuzz

Defaults are the issue's sizes: 10,000 inquiries and 2,000 orders with every service killed
three times and the broker restarted once; 1,000 poison messages; store and broker each away
for 30 s; schemathesis with its coverage phase and 50 examples per operation against every
service. ``--inquiries``, ``--orders``, ``--kills``, ``--poison-count``, ``--outage-seconds``
make it smaller. Everything runs on the local runner's ``faults`` profile (Kafka 29192,
FerretDB 27057), never on the servers other tests share; ``--keep-infra`` leaves it running.
Exit status 1 when a run found a problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kefu_local.infra import LocalInfra

from .crash import CrashConfig, run_crash
from .fleet import Fleet, delete_topics, faults_infra
from .fuzz import FuzzConfig, FuzzResult, run_schemathesis
from .outage import OutageConfig, run_outage
from .poison import PoisonConfig, run_poison


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def run_fuzz(infra: LocalInfra, workdir: Path, config: FuzzConfig) -> list[FuzzResult]:
    fleet = Fleet(infra.endpoints, workdir)
    try:
        fleet.start_all()
        fleet.wait_ready(timeout=300)
        names = ("notifier", "inquiry-chat", "orders", "aftersales", "feedback")
        return [run_schemathesis(fleet, name, config, workdir) for name in names]
    finally:
        fleet.stop_all()
        fleet.drop_databases()
        asyncio.run(delete_topics(infra.endpoints.kafka_bootstrap, fleet.prefix))


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.full_run")
    parser.add_argument("--crash", action="store_true", help="the crash test")
    parser.add_argument("--poison", action="store_true", help="the poison test")
    parser.add_argument("--outage", action="store_true", help="the dependency outage test")
    parser.add_argument("--fuzz", action="store_true", help="schemathesis on every service")
    parser.add_argument("--fuzz-examples", type=int, default=50)
    parser.add_argument("--inquiries", type=int, default=10_000)
    parser.add_argument("--orders", type=int, default=2_000)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per service process")
    parser.add_argument(
        "--traffic-seconds",
        type=float,
        default=0.0,
        help="how long the traffic flows (default: scaled to its size)",
    )
    parser.add_argument("--converge-seconds", type=float, default=3600.0)
    parser.add_argument("--http-sample", type=int, default=1000)
    parser.add_argument("--poison-count", type=int, default=1000)
    parser.add_argument(
        "--good-count", type=int, default=200, help="good inquiries mixed into the poison"
    )
    parser.add_argument("--outage-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep-infra", action="store_true")
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="crash test: leave its databases and topics for a post-mortem",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.crash or args.poison or args.outage or args.fuzz):
        parser.error("choose at least one of --crash, --poison, --outage, --fuzz")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kefu-reliability-"))
    infra = faults_infra(_log)
    infra.up()
    failed = False
    try:
        if args.crash:
            traffic = args.traffic_seconds or max(40.0, (args.inquiries + 4 * args.orders) / 25)
            config = CrashConfig(
                inquiries=args.inquiries,
                orders=args.orders,
                kills_per_instance=args.kills,
                traffic_seconds=traffic,
                converge_seconds=args.converge_seconds,
                http_sample=args.http_sample,
                seed=args.seed,
            )
            _log(f"crash test: {config}")
            report = asyncio.run(
                run_crash(infra, workdir / "crash", config, _log, keep_data=args.keep_data)
            )
            if args.keep_data:
                (workdir / "crash" / "postmortem.json").write_text(
                    json.dumps({"findings": report.findings, "produced": report.produced})
                )
            print("\nCRASH TEST")
            print("\n".join(report.lines()), flush=True)
            failed |= bool(report.problems)
        if args.poison:
            pconfig = PoisonConfig(
                poison=args.poison_count,
                good=args.good_count,
                converge_seconds=args.converge_seconds,
                seed=args.seed,
            )
            _log(f"poison test: {pconfig}")
            preport = asyncio.run(run_poison(infra, workdir / "poison", pconfig, _log))
            print("\nPOISON TEST")
            print("\n".join(preport.lines()), flush=True)
            failed |= bool(preport.problems)
        if args.outage:
            oconfig = OutageConfig(
                outage_seconds=args.outage_seconds,
                converge_seconds=args.converge_seconds,
                seed=args.seed,
            )
            _log(f"outage test: {oconfig}")
            oreport = asyncio.run(run_outage(infra, workdir / "outage", oconfig, _log))
            print("\nOUTAGE TEST")
            print("\n".join(oreport.lines()), flush=True)
            failed |= bool(oreport.problems)
        if args.fuzz:
            fconfig = FuzzConfig(
                max_examples=args.fuzz_examples, phases="examples,coverage,fuzzing", seed=args.seed
            )
            _log(f"schemathesis: {fconfig}")
            freports = run_fuzz(infra, workdir / "fuzz", fconfig)
            print("\nSCHEMATHESIS")
            for r in freports:
                print(
                    f"  {r.instance:<14} {r.tested_operations}/{r.selected_operations} operations, "
                    f"{r.test_cases} cases, {len(r.failures)} failures, {len(r.errors)} errors"
                )
                for failure in r.failures:
                    print(f"    FAILURE {json.dumps(failure)[:300]}")
                failed |= bool(r.failures or r.errors)
            sys.stdout.flush()
    finally:
        if not args.keep_infra:
            infra.down()
        if args.workdir is None and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        elif failed:
            print(f"\nservice logs kept in {workdir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
