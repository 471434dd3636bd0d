"""Issue 13, security 1: a role outside a route's list gets 403, one route per service and group.

The role check runs before the body is read or the store is touched, so the apps are built
offline and called without their lifespan; an allowed role's request would get further (422
for the empty body, or an error from the unconnected store), never 403.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from kefu_local.pytest_plugin import TEST_KEYRING, auth_header
from kefu_shared.auth import Role

from .apps import build

AUTH = {"auth_keys": TEST_KEYRING.keys, "auth_signing_key": TEST_KEYRING.signing_kid}

# (service, role, method, path): each a role the route must refuse.
FORBIDDEN = [
    ("inquiry", Role.AGENT, "POST", "/messages"),  # intake is for the shop's systems
    ("inquiry", Role.SERVICE, "POST", "/inquiries/i-1/replies"),  # replies are agents' work
    ("inquiry", Role.AGENT, "PUT", "/agents/a-1"),  # shifts and skills: supervisors
    ("inquiry", Role.SENIOR_AGENT, "POST", "/knowledge-base/articles"),
    ("inquiry", Role.AGENT, "DELETE", "/quick-replies/q-1"),
    ("inquiry", Role.SUPERVISOR, "POST", "/privacy/erasure-requests"),  # erasure: admins
    ("notifier", Role.AGENT, "POST", "/webhooks"),  # webhooks: admins
    ("notifier", Role.SUPERVISOR, "DELETE", "/webhooks/w-1"),
    ("orders", Role.AGENT, "PUT", "/duty-roster"),  # rosters: supervisors
    ("orders", Role.SERVICE, "POST", "/contacts"),
    ("aftersales", Role.AGENT, "POST", "/cases/c-1/decision"),  # overrides: supervisors
    ("aftersales", Role.SERVICE, "POST", "/cases/c-1/review-reply"),
    ("aftersales", Role.AGENT, "GET", "/audit"),  # the audit log: supervisors and admins
    ("inquiry", Role.SENIOR_AGENT, "GET", "/audit"),
    ("orders", Role.AGENT, "GET", "/orders/o-1/audit"),
    ("feedback", Role.AGENT, "POST", "/survey-rounds"),
    ("feedback", Role.SERVICE, "POST", "/survey-rounds"),
]


@pytest.mark.parametrize(("service", "role", "method", "path"), FORBIDDEN)
async def test_a_role_outside_the_routes_list_is_refused_with_403(
    service: str, role: Role, method: str, path: str
) -> None:
    app = build(service, **AUTH)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://security") as client:
        body: dict[str, Any] = {}
        response = await client.request(method, path, json=body, headers=auth_header(role, "x"))
    assert response.status_code == 403, response.text
    assert role.value in response.json()["detail"]


async def test_a_request_without_a_token_is_refused_with_401() -> None:
    app = build("inquiry", **AUTH)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://security") as client:
        response = await client.post("/messages", json={})
    assert response.status_code == 401
