"""pytest fixtures for the real broker and store (never a mock).

Order of preference: ``KAFKA_BOOTSTRAP_SERVERS`` + ``MONGODB_URI`` from the environment, then a
Docker engine through testcontainers, then the local runner's own Kafka and FerretDB processes
(on ports of their own, so a running demo is not disturbed).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from kefu_local.infra import Endpoints, resolve_endpoints

TEST_PORTS = {"kafka_port": 29092, "controller_port": 29093, "mongo_port": 27037}


@pytest.fixture(scope="session")
def infra() -> Iterator[Endpoints]:
    endpoints, stop = resolve_endpoints("test", **TEST_PORTS)
    try:
        yield endpoints
    finally:
        if stop is not None and not os.environ.get("KEFU_KEEP_TEST_INFRA"):
            stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(infra: Endpoints) -> str:
    return infra.kafka_bootstrap


@pytest.fixture(scope="session")
def mongodb_uri(infra: Endpoints) -> str:
    return infra.mongodb_uri


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A short token unique to this test, for topic, group and database names."""
    import re
    import uuid

    name = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name[5:29]).strip("-")
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def mongo_client(mongodb_uri: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_uri, serverSelectionTimeoutMS=5000, tz_aware=True
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def service_env(kafka_bootstrap: str, mongodb_uri: str, unique: str) -> dict[str, str]:
    """Environment for a service under test: real servers, a database of its own."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MONGODB_URI": mongodb_uri,
        "KEFU_TEST_DB": f"t_{unique.replace('-', '_')}",
    }
