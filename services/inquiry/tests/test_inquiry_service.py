"""The inquiry service on the real broker and store: intake, bad input, spam, bot answers,
routing and agent actions, channel sharding and SLA timers that survive a restart."""

import asyncio
import json
from typing import Any

import httpx
from inquiry_testkit import envelope_bytes, events, make_settings, message, notifications, send
from kefu_inquiry.bootstrap import create_app
from kefu_local.pytest_plugin import running
from kefu_shared import topics
from kefu_shared.testing import eventually, produce, read_topic
from pymongo import AsyncMongoClient

CARD = "4111 1111 1111 1111"


async def put_agent(client: httpx.AsyncClient, agent_id: str, **body: Any) -> None:
    payload = {"categories": ["order", "logistics", "payment"], "languages": ["zh", "en"]}
    response = await client.put(f"/agents/{agent_id}", json={**payload, **body})
    assert response.status_code == 200, response.text


async def test_intake_by_topic_and_http_merges_into_one_inquiry_redacts_cards_and_dedups(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    settings = make_settings(service_overrides, unique)
    first = message(f"订单号 20240518123 什么时候发货？我的卡号 {CARD}", customer_id="c-merge")
    async with running(create_app(settings)) as client:
        await send(kafka_bootstrap, settings, first)
        await send(kafka_bootstrap, settings, first)  # redelivered: changes nothing
        follow_up = message("Also, can I get an invoice?", customer_id="c-merge", channel="email")
        accepted = await client.post("/messages", json=follow_up)
        assert accepted.status_code == 202, accepted.text
        inquiry_id = accepted.json()["inquiry_id"]
        assert accepted.json()["outcome"] == "joined"

        view = (await client.get(f"/inquiries/{inquiry_id}")).json()
        assert [m["message_id"] for m in view["messages"]] == [
            first["message_id"],
            follow_up["message_id"],
        ]
        assert view["channels"] == ["chat", "email"]
        assert view["category"] == "logistics"
        assert view["contact"] == {"phone": "138****5678", "email": "w***@example.com"}
        assert view["status"] == "queued"  # nobody on duty

        got = await events(kafka_bootstrap, settings, expect=3)
        assert [e["type"] for e in got] == [
            "inquiry.received",
            "inquiry.classified",
            "inquiry.received",
        ]
        assert all(e["subject"] == inquiry_id for e in got)
        assert got[0]["data"]["opened"]
        assert not got[2]["data"]["opened"]
        assert got[2]["data"]["message_channel"] == "email"
        metrics = (await client.get("/metrics")).text
        assert 'kefu_inquiry_messages_total{channel="chat",outcome="duplicate"} 1.0' in metrics

    raw = await mongo_client[settings.mongodb_database]["inquiries"].find_one({"_id": inquiry_id})
    assert raw is not None
    stored = json.dumps(raw, default=str)
    assert "4111" not in stored
    topic_dump = await read_topic(kafka_bootstrap, settings.topic(topics.INQUIRY_EVENTS), expect=3)
    assert all(b"4111" not in r.value for r in topic_dump)


async def test_bad_input_is_refused_over_http_naming_the_field_and_dead_lettered_on_kafka(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique, channels="chat")
    good = message("在吗")
    cases = {
        "channel": {**good, "channel": "fax"},
        "customer_id": {k: v for k, v in good.items() if k != "customer_id"},
        "content": {**good, "content": "   "},
    }
    async with running(create_app(settings)) as client:
        for field, body in cases.items():
            response = await client.post("/messages", json=body)
            assert response.status_code == 422, (field, response.text)
            assert field in json.dumps(response.json()["detail"]), (field, response.text)
        oversized = await client.post("/messages", json={**good, "content": "长" * 4001})
        assert oversized.status_code == 422
        assert "content" in oversized.text
        invalid = await client.post(
            "/messages", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert invalid.status_code == 422
        not_served = await client.post("/messages", json={**good, "channel": "email"})
        assert not_served.status_code == 422
        assert "channel" in not_served.text

        topic = settings.topic(topics.inbound_channel_topic("chat"))
        wrong_schema = json.loads(envelope_bytes(good))
        wrong_schema["data"]["customer_id"] = ""
        mismatch = envelope_bytes({**good, "channel": "email"})
        await produce(
            kafka_bootstrap,
            topic,
            [b"{not json", json.dumps(wrong_schema).encode(), mismatch, envelope_bytes(good)],
            key=b"c1",
        )
        await events(kafka_bootstrap, settings, expect=2)  # the good one still got through
        dead = await read_topic(
            kafka_bootstrap, settings.topic(topics.dead_letter_topic("inquiry")), expect=3
        )
        reasons = [d.headers["x-dlq-reason"] for d in dead]
        assert len(dead) == 3
        assert "customer_id" in reasons[1]
        assert "channel" in reasons[2]


async def test_spam_gets_one_polite_refusal_and_is_never_received(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    async with running(create_app(settings)) as client:
        inquiry_ids = []
        for text in ("加微信送红包，V信：abc12345", "专业刷单刷好评，联系QQ 88888888"):
            response = await client.post("/messages", json=message(text, customer_id="spammer"))
            assert response.json()["outcome"] == "spam"
            inquiry_ids.append(response.json()["inquiry_id"])
        got = await events(kafka_bootstrap, settings, expect=2)
        assert [e["type"] for e in got] == ["inquiry.spam_filtered"] * 2
        # Two inquiries, two keys: Kafka orders them only per key, so match them by id.
        refused = {e["data"]["inquiry_id"]: e["data"]["refusal_sent"] for e in got}
        assert refused == {inquiry_ids[0]: True, inquiry_ids[1]: False}
        [refusal] = await notifications(kafka_bootstrap, settings, expect=1, timeout=3)
        assert refusal["data"]["purpose"] == "inquiry_reply"
        assert refusal["data"]["customer_id"] == "spammer"


async def test_a_common_question_is_answered_by_the_bot_from_the_knowledge_base(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    settings = make_settings(service_overrides, unique)
    async with running(create_app(settings)) as client:
        article = {
            "question": "如何开发票？",
            "answer": "在订单详情页点击“申请发票”，电子发票24小时内发到邮箱。",
            "keywords": ["发票", "开"],
            "language": "zh",
            "category": "order",
        }
        created = await client.post("/knowledge-base/articles", json=article)
        assert created.status_code == 201
        article_id = created.json()["id"]
        assert (await client.get(f"/knowledge-base/articles/{article_id}")).status_code == 200
        quick = await client.post(
            "/quick-replies", json={"title": "hi", "text": "您好{customer_name}"}
        )
        assert quick.status_code == 201
        assert len((await client.get("/quick-replies")).json()) == 1

        response = await client.post(
            "/messages", json=message("请问能开发票吗？", customer_id="c-bot")
        )
        inquiry_id = response.json()["inquiry_id"]
        got = await events(kafka_bootstrap, settings, expect=4)
        assert [e["type"] for e in got] == [
            "inquiry.received",
            "inquiry.classified",
            "inquiry.auto_answered",
            "inquiry.resolved",
        ]
        assert got[2]["data"]["article_id"] == article_id
        [answer] = await notifications(kafka_bootstrap, settings, expect=1)
        assert answer["data"]["purpose"] == "bot_answer"
        assert answer["data"]["parameters"]["answer"].startswith("在订单详情页")
        assert answer["data"]["preferred_channel"] == "app_push"
        # Resolved at once, it was never the customer's open inquiry: nothing pointed to it.
        customers = mongo_client[settings.mongodb_database]["customers"]
        assert await customers.find_one({"_id": "c-bot"}) is None
        # The bot closed it, so the next message opens a new inquiry.
        again = await client.post("/messages", json=message("还有别的问题", customer_id="c-bot"))
        assert again.json()["inquiry_id"] != inquiry_id
        # While that one is open, even a question the bot could answer joins it.
        joined = await client.post(
            "/messages", json=message("请问能开发票吗？", customer_id="c-bot")
        )
        assert joined.json()["inquiry_id"] == again.json()["inquiry_id"]
        deleted = await client.delete(f"/knowledge-base/articles/{article_id}")
        assert deleted.status_code == 204


async def test_routing_queue_and_agent_actions(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    async with running(create_app(settings)) as client:
        # Nobody on duty: it waits in the queue.
        response = await client.post(
            "/messages", json=message("我的订单状态怎么查不到", customer_id="c-r")
        )
        inquiry_id = response.json()["inquiry_id"]
        assert (await client.get(f"/inquiries/{inquiry_id}")).json()["status"] == "queued"
        # An agent comes on duty: the queue goes to them.
        await put_agent(client, "li", name="小李", on_duty=True, capacity=1)
        await put_agent(client, "zhao", name="小赵", on_duty=True, capacity=1)
        await put_agent(client, "boss", name="老王", on_duty=True, level="senior")
        view = (await client.get(f"/inquiries/{inquiry_id}")).json()
        assert view["status"] == "assigned"
        first_agent = view["agent_id"]
        assert first_agent in ("li", "zhao")
        other = "zhao" if first_agent == "li" else "li"
        queue = (await client.get(f"/agents/{first_agent}/queue")).json()
        assert [i["id"] for i in queue] == [inquiry_id]

        quick = await client.post(
            "/quick-replies", json={"title": "greet", "text": "您好{customer_name}，马上为您查询"}
        )
        replied = await client.post(
            f"/inquiries/{inquiry_id}/replies",
            json={"agent_id": first_agent, "quick_reply_id": quick.json()["id"]},
        )
        assert replied.status_code == 200, replied.text
        metrics = (await client.get("/metrics")).text
        assert 'kefu_inquiry_first_response_seconds_count{channel="chat"} 1.0' in metrics
        wrong = await client.post(
            f"/inquiries/{inquiry_id}/replies", json={"agent_id": other, "text": "hi"}
        )
        assert wrong.status_code == 409
        transferred = await client.post(
            f"/inquiries/{inquiry_id}/transfer",
            json={"agent_id": first_agent, "to_agent_id": other, "reason": "shift ends"},
        )
        assert transferred.json()["agent_id"] == other
        escalated = await client.post(
            f"/inquiries/{inquiry_id}/escalate", json={"agent_id": other, "to": "senior"}
        )
        assert escalated.json()["agent_id"] == "boss"
        to_finance = await client.post(
            f"/inquiries/{inquiry_id}/escalate", json={"agent_id": "boss", "to": "finance"}
        )
        assert to_finance.json()["status"] == "escalated"
        assert to_finance.json()["department"] == "finance"
        resolved = await client.post(f"/inquiries/{inquiry_id}/resolve", json={})
        assert resolved.json()["status"] == "resolved"
        reopened = await client.post(
            f"/inquiries/{inquiry_id}/reopen", json={"agent_id": "boss", "reason": "not refunded"}
        )
        assert reopened.json()["status"] == "assigned"
        assert [h["action"] for h in reopened.json()["history"]] == [
            "assigned",
            "transferred",
            "escalated",
            "assigned",
            "escalated",
            "resolved",
            "reopened",
        ]
        bad = await client.post(
            f"/inquiries/{inquiry_id}/escalate", json={"agent_id": "boss", "to": "x"}
        )
        assert bad.status_code == 422
        missing = await client.post("/inquiries/nope/resolve", json={"agent_id": "boss"})
        assert missing.status_code == 404

        got = await events(kafka_bootstrap, settings, expect=11)
        types = [e["type"] for e in got]
        assert types == [
            "inquiry.received",
            "inquiry.classified",
            "inquiry.assigned",
            "inquiry.agent_replied",
            "inquiry.transferred",
            "inquiry.assigned",
            "inquiry.escalated",
            "inquiry.assigned",
            "inquiry.escalated",
            "inquiry.resolved",
            "inquiry.reopened",
        ]
        reply_event = got[3]["data"]
        assert reply_event["first_response"]
        assert reply_event["agent_id"] == first_agent
        [note] = await notifications(kafka_bootstrap, settings, expect=1)
        assert note["data"]["parameters"]["reply"] == "您好王芳，马上为您查询"
        assert note["data"]["parameters"]["agent_name"] in ("小李", "小赵")


async def test_two_instances_consume_only_their_own_channels(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    chat = make_settings(service_overrides, unique, channels="chat")
    email = make_settings(service_overrides, unique, channels="email,phone")
    async with running(create_app(chat)) as chat_client, running(create_app(email)) as email_client:
        await send(kafka_bootstrap, chat, message("Where is my parcel?", customer_id="a"))
        await send(kafka_bootstrap, chat, message("订单状态", customer_id="b", channel="email"))
        await send(
            kafka_bootstrap,
            chat,
            message("Call transcript: refund", customer_id="c", channel="phone"),
        )
        await events(kafka_bootstrap, chat, expect=6)

        def counted(text: str, channel: str) -> float:
            prefix = f'kefu_inquiry_messages_total{{channel="{channel}",outcome="opened"}} '
            line = next((x for x in text.splitlines() if x.startswith(prefix)), None)
            return float(line.rsplit(" ", 1)[1]) if line else 0.0

        chat_metrics = (await chat_client.get("/metrics")).text
        email_metrics = (await email_client.get("/metrics")).text
        assert counted(chat_metrics, "chat") == 1
        assert counted(chat_metrics, "email") == counted(chat_metrics, "phone") == 0
        assert counted(email_metrics, "email") == counted(email_metrics, "phone") == 1
        assert counted(email_metrics, "chat") == 0


async def test_an_sla_breach_fires_once_after_a_restart(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str, tmp_path: Any
) -> None:
    targets = tmp_path / "sla.json"
    targets.write_text(
        json.dumps(
            {
                "warn_ratio": 0.5,
                "default": {"first_response": 4, "resolution": 3600},
            }
        )
    )
    settings = make_settings(service_overrides, unique, sla_file=str(targets))
    async with running(create_app(settings)) as client:
        response = await client.post(
            "/messages", json=message("订单什么时候发货", customer_id="c-sla")
        )
        inquiry_id = response.json()["inquiry_id"]
    # Down when the deadline passes; the next instance on the same database fires it.
    await asyncio.sleep(4.5)
    async with running(create_app(settings)) as client:

        async def breached() -> bool:
            view = (await client.get(f"/inquiries/{inquiry_id}")).json()
            first = next(c for c in view["sla"] if c["kind"] == "first_response")
            return bool(first["state"] == "missed")

        await eventually(breached, timeout=10)
        await asyncio.sleep(1)  # more scans: nothing fires twice
    got = await events(kafka_bootstrap, settings, expect=3)
    sla_events = [e for e in got if e["type"].startswith("inquiry.sla_")]
    assert [(e["type"], e["data"]["sla"]) for e in sla_events] == [
        ("inquiry.sla_breached", "first_response")
    ]
    assert sla_events[0]["data"]["customer_id"] == "c-sla"


async def test_an_sla_whose_due_time_was_lost_in_a_crash_still_fires_once_after_a_restart(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    tmp_path: Any,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    targets = tmp_path / "sla.json"
    targets.write_text(
        json.dumps({"warn_ratio": 0.99, "default": {"first_response": 3, "resolution": 3600}})
    )
    settings = make_settings(service_overrides, unique, sla_file=str(targets))
    async with running(create_app(settings)) as client:
        response = await client.post(
            "/messages", json=message("订单什么时候发货", customer_id="c-x")
        )
        inquiry_id = response.json()["inquiry_id"]
    due = mongo_client[settings.mongodb_database]["sla_due"]
    assert await due.count_documents({"_id": inquiry_id}) == 1
    # The process died between the inquiry's write and its due time's: no entry.
    await due.delete_many({})
    await asyncio.sleep(3.2)
    async with running(create_app(settings)) as client:

        async def breached() -> bool:
            view = (await client.get(f"/inquiries/{inquiry_id}")).json()
            first = next(c for c in view["sla"] if c["kind"] == "first_response")
            return bool(first["state"] == "missed")

        await eventually(breached, timeout=10)
        await asyncio.sleep(1)  # more scans: nothing fires twice
    got = await events(kafka_bootstrap, settings, expect=3)
    assert [e["data"]["sla"] for e in got if e["type"] == "inquiry.sla_breached"] == [
        "first_response"
    ]
