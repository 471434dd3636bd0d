"""Issue 13 security 2 and 7 (inquiry): masked contacts, audited unmasking and agent changes."""

from __future__ import annotations

from typing import Any

from inquiry_testkit import make_settings, message
from kefu_inquiry.bootstrap import create_app
from kefu_local.pytest_plugin import auth_header, running
from kefu_shared.auth import Role


async def test_only_managers_see_contacts_unmasked_and_every_such_look_is_audited(
    service_overrides: dict[str, Any], unique: str
) -> None:
    settings = make_settings(service_overrides, unique)
    agent = auth_header(Role.AGENT, "agent-7")
    boss = auth_header(Role.SUPERVISOR, "supervisor-1")
    async with running(create_app(settings)) as client:
        accepted = await client.post("/messages", json=message("在吗", customer_id="c-audit"))
        inquiry_id = accepted.json()["inquiry_id"]

        masked = (await client.get(f"/inquiries/{inquiry_id}", headers=agent)).json()
        assert masked["contact"] == {"phone": "138****5678", "email": "w***@example.com"}
        refused = await client.get(f"/inquiries/{inquiry_id}?unmasked=true", headers=agent)
        assert refused.status_code == 403
        shown = await client.get(f"/inquiries/{inquiry_id}?unmasked=true", headers=boss)
        assert shown.json()["contact"]["phone"] == "13812345678"

        put = await client.put(
            "/agents/agent-7", json={"level": "senior", "on_duty": False}, headers=boss
        )
        assert put.status_code == 200, put.text

        assert (await client.get("/audit", headers=agent)).status_code == 403
        log = (await client.get("/audit", headers=boss)).json()
        actions = {(e["action"], e["subject"], e["actor"]) for e in log}
        assert ("pii.unmasked", inquiry_id, "supervisor-1") in actions
        assert ("agent.level_or_skills_changed", "agent-7", "supervisor-1") in actions
        assert all(e["at"] and e["role"] == "supervisor" for e in log)
        # Append-only: nothing changes or deletes an entry through the API.
        assert (await client.delete("/audit", headers=boss)).status_code == 405
        assert (await client.post("/audit", json={}, headers=boss)).status_code == 405
