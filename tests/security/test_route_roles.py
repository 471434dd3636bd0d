"""Issue 13, security 1: every mutating route of every service names the roles allowed."""

from __future__ import annotations

import pytest

from .apps import MUTATING, SERVICES, build, routes

# Public by design: the customer's survey link carries its own signed token (feedback).
PUBLIC = {("feedback", "POST", "/surveys/{survey_id}/answers")}


@pytest.mark.parametrize("service", SERVICES)
def test_every_mutating_route_declares_its_roles(service: str) -> None:
    app = build(service)
    unguarded = [
        f"{r.method} {r.path}"
        for r in routes(app)
        if r.method in MUTATING and (service, r.method, r.path) not in PUBLIC and r.roles is None
    ]
    assert unguarded == []
