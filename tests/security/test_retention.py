"""Issue 13, security 4: free text past the retention period is purged by each service's job.

(Inquiry's transcripts: services/inquiry/tests/test_inquiry_privacy.py; orders' contact
evidence: services/orders/tests.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kefu_local.pytest_plugin import running
from kefu_shared.testing import eventually
from pymongo import AsyncMongoClient

from .apps import build_with

OLD = datetime.now(UTC) - timedelta(days=400)
RECENT = datetime.now(UTC)

# service -> (collection, a document with old free text, the purged field's path)
CASES = {
    "aftersales": (
        "cases",
        lambda at: {"customer_id": "c-r", "closed_at": at, "description": "瓶盖漏酒", "note": "x"},
        ("description",),
    ),
    "feedback": (
        "surveys",
        lambda at: {"customer_id": "c-r", "answer": {"answered_at": at, "comment": "太慢了"}},
        ("answer", "comment"),
    ),
}


def field(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@pytest.mark.parametrize("service", sorted(CASES))
async def test_free_text_older_than_the_retention_period_is_purged_and_recent_text_stays(
    service: str,
    service_overrides: dict[str, Any],
    unique: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    collection, make, path = CASES[service]
    db = mongo_client[service_overrides["mongodb_database"]]
    await db[collection].insert_many(
        [{"_id": "old", **make(OLD)}, {"_id": "recent", **make(RECENT)}]
    )
    app = build_with(
        service,
        {
            **service_overrides,
            "consumer_group": f"kefu-{service}-{unique}",
            "retention_days": 30,
            "retention_scan_seconds": 0.2,
        },
    )
    async with running(app):

        async def purged() -> bool:
            doc = await db[collection].find_one({"_id": "old"})
            return doc is not None and "purged" in str(field(doc, path))

        await eventually(purged, timeout=30)
    recent = await db[collection].find_one({"_id": "recent"})
    assert recent is not None
    assert "purged" not in str(field(recent, path))
