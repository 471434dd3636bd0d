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


@pytest.mark.parametrize("service", SERVICES)
def test_the_audit_log_can_be_read_by_managers_only_and_changed_by_no_route(service: str) -> None:
    found = [r for r in routes(build(service)) if "audit" in r.path]
    assert [f"{r.method} {r.path}" for r in found if r.method in MUTATING] == []
    for r in found:
        assert r.roles is not None
        assert r.roles <= {"supervisor", "admin"}
