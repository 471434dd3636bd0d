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
