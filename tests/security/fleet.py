"""All five services on the real servers: one topic namespace, one database each."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from kefu_local.pytest_plugin import running
from pymongo import AsyncMongoClient

from .apps import SERVICES, build_with

FAST = {
    "inquiry": {"sla_scan_seconds": 0.2, "dispatch_scan_seconds": 0.5},
    "notifier": {"dispatch_poll_seconds": 0.2},
    "orders": {"timer_scan_seconds": 0.2, "evidence_grace_seconds": 0},
    "aftersales": {},
    "feedback": {},
}


def database(overrides: dict[str, Any], service: str) -> str:
    return f"{overrides['mongodb_database']}_{service[:3]}"


@asynccontextmanager
async def fleet(
    overrides: dict[str, Any], unique: str
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients: dict[str, httpx.AsyncClient] = {}
    async with AsyncExitStack() as stack:
        for service in SERVICES:
            app = build_with(
                service,
                {
                    **overrides,
                    "mongodb_database": database(overrides, service),
                    "consumer_group": f"kefu-{service}-{unique}",
                    **FAST[service],
                },
            )
            clients[service] = await stack.enter_async_context(running(app))
        yield clients


async def dump_databases(
    mongo: AsyncMongoClient[dict[str, Any]], overrides: dict[str, Any]
) -> dict[str, str]:
    """Every collection of every service's database, as JSON text per service."""
    out: dict[str, str] = {}
    for service in SERVICES:
        db = mongo[database(overrides, service)]
        docs: list[Any] = []
        for name in await db.list_collection_names():
            docs.extend([name, *[d async for d in db[name].find({})]])
        out[service] = json.dumps(docs, default=str, ensure_ascii=False)
    return out
