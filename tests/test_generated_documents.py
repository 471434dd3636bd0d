"""The AsyncAPI documents in docs/ are what the services generate, and say what they publish."""

import json
from pathlib import Path

import pytest
from kefu_local.specs import asyncapi_documents
from kefu_shared.topics import EVENTS_TOPIC_OF_SERVICE

ASYNCAPI = Path(__file__).resolve().parents[1] / "docs" / "asyncapi"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return asyncapi_documents()


def test_committed_asyncapi_documents_match_what_the_services_generate(
    generated: dict[str, str],
) -> None:
    assert {"inquiry", "notifier"} <= set(generated)
    for service, text in generated.items():
        path = ASYNCAPI / f"{service}.json"
        assert path.exists(), f"{path} missing: run `./kefu contracts export`"
        assert path.read_text() == text, f"{path} is stale: run `./kefu contracts export`"


def test_each_asyncapi_document_lists_the_events_the_service_publishes(
    generated: dict[str, str],
) -> None:
    for service, text in generated.items():
        document = json.loads(text)
        assert document["asyncapi"] == "3.0.0"
        addresses = {c["address"]: name for name, c in document["channels"].items()}
        events_topic = EVENTS_TOPIC_OF_SERVICE[service]
        assert events_topic in addresses, f"{service} does not document {events_topic}"
        send = [op for op in document["operations"].values() if op["action"] == "send"]
        assert send, f"{service} documents no published events"
