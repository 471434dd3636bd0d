"""Bad input at the edges (issue 13): schemathesis against every service's OpenAPI document,
and the limits every HTTP API must have (request size, page size).

Each service runs as its own process (the fleet); schemathesis calls it on its real port with
an admin token, a bounded number of examples per operation, and two checks: no 5xx
(``not_a_server_error``) and every response as documented (``response_schema_conformance``).
The full fuzzing run (coverage phase, more examples) is
``uv run python -m tests.reliability.full_run --fuzz``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from .fleet import Fleet
from .fuzz import FuzzConfig, collection_operations, run_schemathesis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

# One instance per service (the second inquiry instance serves the same API).
INSTANCES = ("notifier", "inquiry-chat", "orders", "aftersales", "feedback")
SMALL = FuzzConfig(max_examples=8, phases="examples,fuzzing", seed=13)
ONE_MIB = 1024 * 1024
PAGE_CAP = 1000  # the largest page any endpoint may promise


@pytest.mark.parametrize("instance", INSTANCES)
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(
    fleet: Fleet, instance: str, tmp_path: Path
) -> None:
    result = run_schemathesis(fleet, instance, SMALL, tmp_path)
    assert result.tested_operations > 0
    assert result.tested_operations == result.selected_operations, result.summary()
    assert result.errors == [], result.summary()
    assert result.failures == [], result.summary()


def _spec(fleet: Fleet, instance: str) -> dict[str, Any]:
    r = httpx.get(f"{fleet.url(instance)}/openapi.json", timeout=30)
    r.raise_for_status()
    return dict(r.json())


@pytest.mark.parametrize("instance", INSTANCES)
def test_every_collection_endpoint_caps_its_page_size(fleet: Fleet, instance: str) -> None:
    uncapped = [
        op.name for op in collection_operations(_spec(fleet, instance)) if not op.capped(PAGE_CAP)
    ]
    assert uncapped == []


@pytest.mark.parametrize(
    ("instance", "path"),
    [
        ("inquiry-other", "/messages"),
        ("aftersales", "/cases"),
        ("notifier", "/webhooks"),
        ("orders", "/orders/O-1/changes"),
        ("feedback", "/survey-rounds"),
    ],
)
def test_a_request_body_above_one_mib_is_refused_with_413(
    fleet: Fleet, instance: str, path: str
) -> None:
    body = b'{"padding": "' + b"x" * (2 * ONE_MIB) + b'"}'
    r = httpx.post(
        f"{fleet.url(instance)}{path}",
        content=body,
        headers={**fleet.auth(), "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413, r.status_code


@pytest.mark.parametrize("instance", INSTANCES)
def test_a_page_size_above_the_cap_is_refused_naming_limit(fleet: Fleet, instance: str) -> None:
    capped = [op for op in collection_operations(_spec(fleet, instance)) if op.capped(PAGE_CAP)]
    for op in capped:
        if "{" in op.path:
            continue  # needs an existing resource; the cap itself is in the schema
        r = httpx.get(
            f"{fleet.url(instance)}{op.path}",
            params={"limit": op.maximum + 1},
            headers=fleet.auth(),
            timeout=30,
        )
        assert r.status_code == 422, (op.name, r.status_code, r.text[:200])
        assert "limit" in r.text, op.name
