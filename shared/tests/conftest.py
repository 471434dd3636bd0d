from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from faststream.kafka import KafkaBroker
from kefu_shared.broker import make_broker
from kefu_shared.dead_letter import RetryPolicy
from kefu_shared.observability import make_tracer_provider
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.1, max_backoff=0.4)


@pytest.fixture
async def db(
    mongo_client: AsyncMongoClient[dict[str, Any]], unique: str
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    name = f"t_{unique.replace('-', '_')}"
    yield mongo_client[name]
    await mongo_client.drop_database(name)


@pytest.fixture
def broker_factory(kafka_bootstrap: str) -> Callable[..., KafkaBroker]:
    def make(service: str, retry: RetryPolicy = FAST_RETRY) -> KafkaBroker:
        return make_broker(
            service=service,
            bootstrap_servers=kafka_bootstrap,
            registry=CollectorRegistry(),
            tracer_provider=make_tracer_provider(service),
            retry=retry,
        )

    return make
