"""PyMongo's async client (the successor of Motor) and index creation at start-up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]


def make_client(uri: str, *, app_name: str, timeout_ms: int = 5000) -> AsyncMongoClient[Document]:
    """One client per process and event loop; pooled, lazily connecting."""
    return AsyncMongoClient(
        uri,
        appname=app_name,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        tz_aware=True,
    )


async def ping(db: AsyncDatabase[Document]) -> bool:
    try:
        await db.command("ping")
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class IndexSpec:
    """An index a collection needs; created idempotently when the service starts."""

    collection: str
    keys: Sequence[tuple[str, int]]
    unique: bool = False
    name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def model(self) -> IndexModel:
        kwargs: dict[str, Any] = dict(self.options)
        if self.name:
            kwargs["name"] = self.name
        return IndexModel(list(self.keys), unique=self.unique, **kwargs)


async def ensure_indexes(db: AsyncDatabase[Document], specs: Sequence[IndexSpec]) -> None:
    # One index per command: FerretDB 1.24 drops the connection when one createIndexes names
    # several indexes that already exist, which is every restart.
    for spec in specs:
        await db[spec.collection].create_indexes([spec.model()])


def outbox_index(collection: str) -> IndexSpec:
    """The relay's scan: documents that still hold unsent events."""
    return IndexSpec(collection, [("outbox_pending", ASCENDING)], name="outbox_pending")


Collection = AsyncCollection[Document]
