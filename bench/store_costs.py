"""What one store command of each kind costs the store's processes, and what that caps.

kefu's journey needs kinds of commands the raw same-I/O baseline does not: compare-and-set
updates (idempotent handlers, the outbox relay) and reads by id. This measures, on the
benchmark's store, the CPU each kind costs FerretDB and its PostgreSQL (their processes' CPU
seconds, read from /proc, per document), 16 commands in flight, with the inquiry document the
service writes. Multiplied by the journey's command mix (counted by ``bench.wall``), it gives
the store's CPU per journey, and so a ceiling no code in the services can pass while it keeps
those commands: all the machine's cores busy in the store alone.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pymongo import AsyncMongoClient, UpdateOne

from bench.payloads import Shapes
from bench.procs import CpuWindow

IN_FLIGHT = 16
BATCH = 16

Command = Callable[[int], Awaitable[Any]]


async def _measure(
    store_pids: Mapping[str, int], documents: int, per_call: int, command: Command
) -> dict[str, float]:
    """Store CPU ms per document and documents/s for ``documents // per_call`` calls."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def call(i: int) -> None:
        async with gate:
            await command(i)

    window = CpuWindow(store_pids).start()
    t0 = time.monotonic()
    await asyncio.gather(*(call(i) for i in range(documents // per_call)))
    elapsed = time.monotonic() - t0
    cores = window.stop()
    store_cores = sum(cores[name] for name in store_pids)
    return {
        "store_cpu_ms_per_doc": round(1000 * store_cores * elapsed / documents, 3),
        "docs_per_s": round(documents / elapsed, 1),
    }


async def measure(
    uri: str, database: str, store_pids: Mapping[str, int], shapes: Shapes, documents: int = 1600
) -> dict[str, dict[str, float]]:
    """Per kind of command: store CPU ms per document and documents/s."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, maxPoolSize=IN_FLIGHT * 2)
    db = client[database]
    singles, batched = db["costs_single"], db["costs_batched"]
    for c in (singles, batched):
        await c.drop()

    def doc(i: int) -> dict[str, Any]:
        return shapes.inquiry_doc(f"d{i}")

    async def insert_one(i: int) -> None:
        await singles.insert_one(doc(i))

    async def insert_many(i: int) -> None:
        await batched.insert_many([doc(i * BATCH + k) for k in range(BATCH)], ordered=False)

    version = int(shapes.inquiry_written["version"])

    def cas(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        # The shape of every kefu write to an existing aggregate: matched on id and version
        # (here the relay's, which empties the outbox).
        return (
            {"_id": f"d{i}", "version": version},
            {"$set": {"outbox": [], "outbox_pending": False, "version": version + 1}},
        )

    async def update_one(i: int) -> None:
        result = await singles.update_one(*cas(i))
        _check_modified(result.modified_count, 1)

    async def bulk_updates(i: int) -> None:
        updates = [UpdateOne(*cas(i * BATCH + k)) for k in range(BATCH)]
        result = await batched.bulk_write(updates, ordered=False)
        _check_modified(result.modified_count, BATCH)

    async def find_one(i: int) -> None:
        await singles.find_one({"_id": f"d{i}"})

    async def find_in(i: int) -> None:
        await batched.find({"_id": {"$in": [f"d{i * BATCH + k}" for k in range(BATCH)]}}).to_list()

    kinds: dict[str, tuple[int, Command]] = {
        "insert": (1, insert_one),
        "insert_many": (BATCH, insert_many),
        "update": (1, update_one),
        "bulk_write_updates": (BATCH, bulk_updates),
        "find": (1, find_one),
        "find_in": (BATCH, find_in),
    }
    out: dict[str, dict[str, float]] = {}
    try:
        for name, (per_call, command) in kinds.items():
            out[name] = await _measure(store_pids, documents, per_call, command)
    finally:
        for c in (singles, batched):
            await c.drop()
        await client.close()
    return out


def _check_modified(modified: int, expected: int) -> None:
    if modified != expected:
        # A compare-and-set that matches nothing costs a read, not a write: not what is measured.
        raise RuntimeError(f"compare-and-set changed {modified} of {expected} documents")


def ceiling(
    costs: Mapping[str, Mapping[str, float]], mix: Mapping[str, float], cores: int | None = None
) -> dict[str, Any]:
    """Store CPU per journey for a command mix ({kind: commands per journey}), and the journeys/s
    at which the store alone would fill every core."""
    cores = cores or os.cpu_count() or 1
    measured = {kind: n for kind, n in mix.items() if kind in costs}
    per_journey = sum(n * costs[kind]["store_cpu_ms_per_doc"] for kind, n in measured.items())
    return {
        "mix": dict(mix),
        # Kinds this module does not measure are left out, so the bound is an upper one.
        "not_measured": sorted(set(mix) - set(measured)),
        "store_cpu_ms_per_journey": round(per_journey, 2),
        "cores": cores,
        "store_bound_per_s": round(1000 * cores / per_journey, 1) if per_journey else None,
    }
