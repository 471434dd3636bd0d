"""The relay's order and retry rules, on an in-memory outbox."""

from collections.abc import Sequence
from typing import Any

from kefu_shared.documents import Stored
from kefu_shared.outbox import OutboxMessage, OutboxRelay


class MemoryOutbox:
    """One aggregate document's outbox, removed by id like the real store does."""

    def __init__(self, messages: list[OutboxMessage]) -> None:
        self.outbox = [m.to_document() for m in messages]
        self.version = 1

    def stored(self) -> Stored:
        return Stored("case-1", {}, self.version, (), tuple(self.outbox))

    def outbox_message(self, item: dict[str, Any]) -> OutboxMessage:
        return OutboxMessage.from_document(item)

    async def pending_outbox(self, limit: int) -> list[dict[str, Any]]:
        if not self.outbox:
            return []
        return [{"_id": "case-1", "outbox": list(self.outbox), "version": self.version}]

    async def remove_relayed(
        self,
        doc_id: str,
        sent: set[str],
        *,
        version: int | None = None,
        outbox: Sequence[dict[str, Any]] | None = None,
    ) -> bool:
        self.outbox = [m for m in self.outbox if m["id"] not in sent]
        self.version += 1
        return True


def message(n: int, key: str) -> OutboxMessage:
    return OutboxMessage(id=f"e{n}", topic="kefu.cases", key=key, body="{}", headers={})


async def test_a_failed_publish_holds_back_the_later_events_of_its_key_until_the_sweep() -> None:
    outbox = MemoryOutbox([message(1, "a"), message(2, "a"), message(3, "b"), message(4, "a")])
    published: list[str] = []
    broken = {"e2"}

    async def publish(m: OutboxMessage) -> None:
        if m.id in broken:
            raise ConnectionError("broker away")
        published.append(m.id)

    relay = OutboxRelay([outbox], publish, poll_seconds=3600)
    relay.handoff(outbox, outbox.stored())
    await relay.idle()
    # e3 has another key (another partition): it is not held back by e2.
    assert sorted(published) == ["e1", "e3"]
    assert [m["id"] for m in outbox.outbox] == ["e2", "e4"]

    broken.clear()
    assert await relay.relay_once() == 2
    assert published[2:] == ["e2", "e4"]
    assert outbox.outbox == []


async def test_an_event_confirmed_once_is_not_published_again_by_a_stale_snapshot() -> None:
    outbox = MemoryOutbox([message(1, "a")])
    stale = outbox.stored()
    published: list[str] = []

    async def publish(m: OutboxMessage) -> None:
        published.append(m.id)

    relay = OutboxRelay([outbox], publish, poll_seconds=3600)
    relay.handoff(outbox, outbox.stored())
    relay.handoff(outbox, stale)
    await relay.idle()
    assert published == ["e1"]
    assert outbox.outbox == []


async def test_a_partitions_events_are_handed_over_together_and_count_as_sent_once_confirmed() -> (
    None
):
    import asyncio

    outbox = MemoryOutbox([message(1, "a"), message(2, "a"), message(3, "b"), message(4, "a")])
    handed: list[str] = []
    confirmations: dict[str, asyncio.Future[None]] = {}

    async def send(m: OutboxMessage) -> asyncio.Future[None]:
        handed.append(m.id)
        confirmations[m.id] = asyncio.get_running_loop().create_future()
        return confirmations[m.id]

    async def publish(m: OutboxMessage) -> None:
        raise AssertionError("with a send, nothing is published one by one")

    relay = OutboxRelay([outbox], publish, poll_seconds=3600, send=send)
    relay.handoff(outbox, outbox.stored())
    await asyncio.sleep(0.01)
    # Every event of key "a" is with the producer before the first one is confirmed.
    assert handed == ["e1", "e2", "e4", "e3"]
    assert len(outbox.outbox) == 4
    for event_id in ("e1", "e3", "e4"):
        confirmations[event_id].set_result(None)
    # e2 is refused: e4, confirmed after it, stays in the outbox and goes out again after e2.
    confirmations["e2"].set_exception(ConnectionError("broker away"))
    await relay.idle()
    assert [m["id"] for m in outbox.outbox] == ["e2", "e4"]

    handed.clear()
    confirmations.clear()
    sweep = asyncio.create_task(relay.relay_once())
    await asyncio.sleep(0.01)
    assert handed == ["e2", "e4"]
    for future in confirmations.values():
        future.set_result(None)
    assert await sweep == 2
    assert outbox.outbox == []
