"""pytest fixtures for the real broker and store (never a mock).

Order of preference: ``KAFKA_BOOTSTRAP_SERVERS`` + ``MONGODB_URI`` from the environment, then a
Docker engine through testcontainers, then the local runner's own Kafka and FerretDB processes
(on ports of their own, so a running demo is not disturbed).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from kefu_shared.auth import KeyRing, Role
from pymongo import AsyncMongoClient

from kefu_local.infra import Endpoints, resolve_endpoints

# The services under test verify tokens with this key (see service_overrides).
TEST_KEYRING = KeyRing({"test-1": "kefu-test-signing-secret-not-for-production"}, "test-1")


@pytest.fixture(scope="session")
def infra() -> Iterator[Endpoints]:
    endpoints, stop = resolve_endpoints(
        "test", kafka_port=29092, controller_port=29093, mongo_port=27037
    )
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
def service_overrides(kafka_bootstrap: str, mongodb_uri: str, unique: str) -> dict[str, Any]:
    """Settings for a service under test: real servers, its own database and topic namespace."""
    token = unique.rsplit("-", 1)[-1]
    return {
        "kafka_bootstrap_servers": kafka_bootstrap,
        "mongodb_uri": mongodb_uri,
        "mongodb_database": f"t_{unique.replace('-', '_')}",
        "topic_prefix": f"t{token}.",
        "outbox_poll_seconds": 0.2,
        "retry_initial_backoff_seconds": 0.05,
        "retry_max_backoff_seconds": 0.2,
        "auth_keys": TEST_KEYRING.keys,
        "auth_signing_key": TEST_KEYRING.signing_kid,
    }


def auth_header(role: Role = Role.ADMIN, subject: str = "test-admin") -> dict[str, str]:
    """An Authorization header the services under test accept (they get TEST_KEYRING)."""
    return {"Authorization": f"Bearer {TEST_KEYRING.issue(subject, role)}"}


@asynccontextmanager
async def running(
    app: Any, *, role: Role | None = Role.ADMIN, subject: str = "test-admin"
) -> AsyncIterator[httpx.AsyncClient]:
    """Run a service's ASGI app (lifespan: broker, relay, loops) and talk HTTP to it.

    The client calls as ``role`` (admin by default; None sends no token).
    """
    headers = auth_header(role, subject) if role is not None else {}
    async with (
        LifespanManager(app, startup_timeout=120, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://service",
            headers=headers,
        ) as client,
    ):
        yield client
