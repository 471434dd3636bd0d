"""Issue 13, security 8: the orders database restored into an empty one carries on working."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kefu_local.pytest_plugin import running
from kefu_shared import topics
from kefu_shared.testing import eventually, produce
from pymongo import AsyncMongoClient

from .apps import build_with
from .backup import export_database, import_database
from .test_erasure import order


async def test_a_restored_orders_database_serves_its_orders_and_takes_their_next_events(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    source = service_overrides["mongodb_database"]
    restored = f"{source}_restored"
    prefix = service_overrides["topic_prefix"]
    order_id = f"O-bk-{unique[-6:]}"
    placed_at = datetime.now(UTC) - timedelta(hours=1)

    def orders_app(database: str, group: str) -> Any:
        values = {
            **service_overrides,
            "mongodb_database": database,
            "consumer_group": group,
            "timer_scan_seconds": 0.2,
        }
        return build_with("orders", values)

    async with running(orders_app(source, f"kefu-orders-{unique}")) as client:
        await produce(
            kafka_bootstrap,
            prefix + topics.COMMERCE_ORDERS,
            [order("c-bk", order_id, placed_at=placed_at.isoformat())],
        )

        async def placed() -> bool:
            return (await client.get(f"/orders/{order_id}")).status_code == 200

        await eventually(placed, timeout=60)

    backup = await export_database(mongo_client[source])
    assert await import_database(mongo_client[restored], backup) > 0
    with pytest.raises(ValueError, match="not empty"):
        await import_database(mongo_client[restored], backup)

    # The same consumer group: the restored service resumes where the original stopped.
    async with running(orders_app(restored, f"kefu-orders-{unique}")) as client:
        view = (await client.get(f"/orders/{order_id}")).json()
        assert view["status"] == "placed"
        paid = order(
            "c-bk",
            order_id,
            kind="paid",
            placed_at=placed_at.isoformat(),
            paid_at=datetime.now(UTC).isoformat(),
        )
        await produce(kafka_bootstrap, prefix + topics.COMMERCE_ORDERS, [paid])

        async def is_paid() -> bool:
            return (await client.get(f"/orders/{order_id}")).json()["status"] == "paid"

        await eventually(is_paid, timeout=60)
