"""Tokens and roles: every service route needs a token, roles are checked, keys rotate."""

import time
from typing import Any

import jwt
import pytest
from fastapi import APIRouter, Depends
from kefu_local.pytest_plugin import TEST_KEYRING, auth_header, running
from kefu_shared.auth import KeyRing, Role, TokenError, requires
from kefu_shared.http import create_http_app
from kefu_shared.runtime import build_runtime
from kefu_shared.settings import ServiceSettings


def test_a_token_names_its_subject_and_role() -> None:
    ring = KeyRing({"k1": "secret-one"}, "k1")
    principal = ring.verify(ring.issue("agent-7", Role.AGENT))
    assert (principal.subject, principal.role) == ("agent-7", Role.AGENT)


def test_rotation_accepts_both_keys_until_the_old_one_is_removed() -> None:
    old = KeyRing({"k1": "secret-one"}, "k1")
    token_from_old = old.issue("svc", Role.SERVICE)
    rotating = KeyRing({"k1": "secret-one", "k2": "secret-two"}, "k2")
    assert rotating.verify(token_from_old).subject == "svc"
    assert rotating.verify(rotating.issue("svc", Role.SERVICE)).subject == "svc"
    rotated = KeyRing({"k2": "secret-two"}, "k2")
    with pytest.raises(TokenError, match="unknown signing key"):
        rotated.verify(token_from_old)


def test_expired_forged_and_unknown_role_tokens_are_refused() -> None:
    ring = KeyRing({"k1": "secret-one"}, "k1")
    expired = jwt.encode(
        {"sub": "a", "role": "agent", "exp": int(time.time()) - 10},
        "secret-one",
        algorithm="HS256",
        headers={"kid": "k1"},
    )
    with pytest.raises(TokenError, match="expired"):
        ring.verify(expired)
    forged = jwt.encode(
        {"sub": "a", "role": "admin", "exp": int(time.time()) + 60},
        "guessed",
        algorithm="HS256",
        headers={"kid": "k1"},
    )
    with pytest.raises(TokenError, match="Signature"):
        ring.verify(forged)
    boss = jwt.encode(
        {"sub": "a", "role": "god", "exp": int(time.time()) + 60},
        "secret-one",
        algorithm="HS256",
        headers={"kid": "k1"},
    )
    with pytest.raises(TokenError, match="unknown role"):
        ring.verify(boss)


async def test_routes_need_a_token_and_mutations_check_the_role(
    service_overrides: dict[str, Any],
) -> None:
    runtime = build_runtime("authdemo", ServiceSettings(**service_overrides))
    router = APIRouter()

    @router.get("/things")
    async def list_things() -> list[str]:
        return ["a"]

    @router.post("/things", dependencies=[Depends(requires(Role.SUPERVISOR, Role.ADMIN))])
    async def add_thing() -> dict[str, str]:
        return {"ok": "added"}

    app = create_http_app(runtime, [router])
    async with running(app, role=None) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/metrics")).status_code == 200
        assert (await anonymous.get("/things")).status_code == 401
        wrong_key = KeyRing({"test-1": "not-the-secret"}, "test-1").issue("x", Role.ADMIN)
        refused = await anonymous.get("/things", headers={"Authorization": f"Bearer {wrong_key}"})
        assert refused.status_code == 401
        agent = auth_header(Role.AGENT, "agent-1")
        assert (await anonymous.get("/things", headers=agent)).status_code == 200
        forbidden = await anonymous.post("/things", headers=agent)
        assert forbidden.status_code == 403
        assert "agent" in forbidden.json()["detail"]
        supervisor = auth_header(Role.SUPERVISOR, "boss")
        assert (await anonymous.post("/things", headers=supervisor)).status_code == 200
    assert TEST_KEYRING.signing_kid in service_overrides["auth_keys"]
