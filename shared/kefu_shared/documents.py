"""Aggregates stored one per document, with their outgoing events and applied messages inside.

FerretDB has no multi-document transactions, and MongoDB's cost a lot; a single-document update
is atomic on both. So each aggregate document carries
- the aggregate's state,
- ``version``: an optimistic-concurrency counter (compare-and-set on every write),
- ``outbox``: events produced by the change, not yet relayed to Kafka (the transactional outbox),
- ``applied``: ids of the last messages applied, so a redelivered message changes nothing.
State, events and the applied id are written in one update: a crash either loses all of it
(and the message is redelivered) or keeps all of it (and the relay publishes the events later).

Decision: a document this process wrote a moment ago is not read again by its next write (the
next step of the same message, the relay's removal): the store remembers what it wrote for a few
seconds and compares-and-sets against that version. A stale memory (another instance wrote
since) costs one unmatched update and a fresh read, never a lost update; ``load`` always reads.

Decision: on FerretDB over SQLite the compare-and-set is a read of the version by ``_id``
followed by an update filtered by ``_id`` alone, under the per-document lock. There FerretDB 1.24
pushes down only an exact ``{_id: value}`` filter; ``{_id, version}`` decodes every document of
the collection (measured at 1,000 inquiries: 83 ms against 11 + 13 ms for the two commands, and
it grows with the collection). FerretDB's own compare-and-set is not atomic either (below), so
this keeps the same guarantee there. Where the server pushes ``{_id, version}`` down (MongoDB;
FerretDB over PostgreSQL, asked once with ``explain``) the one ``{_id, version}`` update stays.

Decision: writes to one document are also serialised inside the process. MongoDB makes the
version compare-and-set atomic, but FerretDB 1.24 (SQLite) does not: it reads and then writes
without a lock, so concurrent updates of one document are lost (measured: 20 concurrent ``$inc``
left 2). Kafka already gives each aggregate key to one consumer; the per-document lock covers
the other writers in the same process (HTTP commands, timers, the outbox relay).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from kefu_shared.mongo import Collection, Document
from kefu_shared.outbox import OutboxMessage

log = logging.getLogger(__name__)

RESERVED_FIELDS = frozenset({"_id", "version", "outbox", "outbox_pending", "applied"})


class ConcurrencyConflict(RuntimeError):
    """The document changed between read and write too many times in a row."""


@dataclass(frozen=True)
class Change:
    """What a use case decided: the new state and the events to publish with it."""

    state: Document
    events: Sequence[OutboxMessage] = ()


@dataclass(frozen=True)
class Stored:
    id: str
    state: Document
    version: int
    applied: tuple[str, ...] = ()
    outbox: tuple[Document, ...] = ()


@dataclass
class Outcome:
    """What ``mutate`` did: ``duplicate`` if the message had been applied before."""

    stored: Stored | None
    changed: bool = False
    duplicate: bool = False
    events: list[OutboxMessage] = field(default_factory=list)


# Called after a write that staged events, with the store and what it wrote (``outbox`` holds
# every event still waiting in the document, oldest first): the relay publishes them at once.
OnWritten = Callable[["VersionedDocumentStore", Stored], None]


class DueTimes:
    """When each document of a collection is next due, in a small collection of its own.

    A timer loop that scans the aggregates for ``next_at <= now`` reads (and on FerretDB
    decodes) every document each time. Here the store writes ``{_id, at, **labels}`` for a
    document whose due time changed, right after the document itself (FerretDB has no
    transactions, so it cannot be the same write), and the loop scans only this collection.
    A crash between the two writes leaves an entry missing or stale: ``reconcile`` (at start and
    every few minutes) rewrites entries from the aggregates, and a stale entry that fires finds
    nothing to do and is set from the document (``refresh``). Entries are never deleted by
    ``reconcile``, so a timer is late at worst, never lost; it fires once because firing is a
    compare-and-set write to the aggregate, as before.
    """

    def __init__(
        self,
        collection: Collection,
        source: Collection,
        *,
        due_at: Callable[[Document], datetime | None],
        labels: Callable[[Document], Document] = lambda state: {},
        may_be_due: Document | Sequence[Document] | None = None,
        projection: Document | None = None,
    ) -> None:
        self.collection = collection
        self._source = source
        self._due_at = due_at
        self._labels = labels
        # Several filters are read one after another: equalities (``{"status": "queued"}``)
        # that FerretDB pushes down to an index, where one ``$in`` or ``$ne`` decodes every
        # document of the collection (measured at 10k inquiries: ``sla_next_at $ne null``
        # 4,675 ms; three ``status`` equalities on its index 3 x 1 ms).
        if may_be_due is None or isinstance(may_be_due, dict):
            self._may_be_due: list[Document] = [may_be_due or {}]
        else:
            self._may_be_due = list(may_be_due)
        self._projection = projection

    def due_of(self, state: Document | None) -> datetime | None:
        return self._due_at(state) if state is not None else None

    async def put(self, doc_id: str, state: Document | None) -> None:
        at = self.due_of(state)
        if at is None or state is None:
            await self.collection.delete_one({"_id": doc_id})
            return
        entry = {"at": at, **self._labels(state)}
        await self.collection.replace_one({"_id": doc_id}, entry, upsert=True)

    async def refresh(self, doc_id: str, stored: Stored | None) -> None:
        """Set the entry from the document as it is (after a firing that changed nothing)."""
        await self.put(doc_id, stored.state if stored else None)

    async def due(self, now: datetime, limit: int, where: Document | None = None) -> list[str]:
        query: Document = {"at": {"$lte": now}, **(where or {})}
        cursor = self.collection.find(query, {"_id": 1}).sort("at", ASCENDING)
        return [str(d["_id"]) for d in await cursor.limit(limit).to_list()]

    async def reconcile(self) -> int:
        """Write an entry for every aggregate that is due and whose entry is missing or differs;
        returns how many were written."""
        have = {d["_id"]: d for d in await self.collection.find({}).to_list()}
        written = 0
        for may_be_due in self._may_be_due:
            async for doc in self._source.find(may_be_due, self._projection):
                at = self._due_at(doc)
                if at is None:
                    continue
                entry = {"at": at, **self._labels(doc)}
                current = have.get(doc["_id"])
                if current is not None and all(current.get(k) == v for k, v in entry.items()):
                    continue
                await self.collection.replace_one({"_id": doc["_id"]}, entry, upsert=True)
                have[doc["_id"]] = {"_id": doc["_id"], **entry}
                written += 1
        if written:
            log.info("due times of %s: %d entries rewritten", self._source.name, written)
        return written


Decide = (
    Callable[[Stored | None], Change | None] | Callable[[Stored | None], Awaitable[Change | None]]
)


class VersionedDocumentStore:
    """Load-decide-write with compare-and-set, outbox and idempotence in one document."""

    def __init__(
        self,
        collection: Collection,
        *,
        applied_limit: int = 64,
        max_attempts: int = 20,
        on_events: Callable[[], None] | None = None,
        remember_seconds: float = 5.0,
        remember_limit: int = 1024,
        due: DueTimes | None = None,
    ) -> None:
        self.collection = collection
        self._applied_limit = applied_limit
        self._max_attempts = max_attempts
        self._on_events = on_events
        self._on_written: OnWritten | None = None
        # What this process wrote lately, by id: (monotonic time written, what was written).
        self._written: OrderedDict[str, tuple[float, Stored]] = OrderedDict()
        self._remember_seconds = remember_seconds
        self._remember_limit = remember_limit
        self.due = due
        # Documents whose due entry is held back (``hold_due``): id -> an entry may exist.
        self._held_due: dict[str, bool] = {}
        self._id_filters_only: bool | None = None  # FerretDB? asked once, at the first write
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, doc_id: str) -> asyncio.Lock:
        lock = self._locks.get(doc_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[doc_id] = lock
        return lock

    def hand_written_events_to(self, on_written: OnWritten) -> None:
        """After each write that staged events, call ``on_written`` instead of ``on_events``."""
        self._on_written = on_written

    def _remember(self, stored: Stored) -> None:
        if self._remember_seconds <= 0:
            return
        self._written[stored.id] = (time.monotonic(), stored)
        self._written.move_to_end(stored.id)
        while len(self._written) > self._remember_limit:
            self._written.popitem(last=False)

    def _recall(self, doc_id: str) -> Stored | None:
        entry = self._written.get(doc_id)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self._remember_seconds:
            del self._written[doc_id]
            return None
        return entry[1]

    def _forget(self, doc_id: str) -> None:
        self._written.pop(doc_id, None)

    async def load(self, doc_id: str) -> Stored | None:
        doc = await self.collection.find_one({"_id": doc_id})
        return _stored(doc) if doc else None

    async def load_recent(self, doc_id: str) -> Stored | None:
        """What this process wrote in the last few seconds, else a read. Only for a caller
        whose decisions are checked again by its next write (a compare-and-set ``mutate``):
        the memory is stale if another instance wrote since."""
        remembered = self._recall(doc_id)
        return remembered if remembered is not None else await self.load(doc_id)

    async def mutate(
        self,
        doc_id: str,
        decide: Decide,
        *,
        message_id: str | None = None,
        expect_new: bool = False,
        hold_due: bool = False,
    ) -> Outcome:
        """Apply ``decide`` to the current document, at most once per ``message_id``.

        ``decide`` gets the stored document (or None) and returns the new state with its events,
        or None to change nothing. It may run more than once under contention, so it must be a
        pure function of its input.

        ``expect_new``: the id is most likely new (derived from a message seen for the first
        time), so decide on "no document" and insert without reading first; if the document
        exists after all, the insert is refused and it is read and decided again as usual.

        ``hold_due``: the caller works on this document at once (a delivery attempted as soon as
        it is accepted), so its due entry is not written now: the first later write without
        ``hold_due`` writes it (or, if the document is no longer due and never had an entry,
        nothing), and ``release_due`` writes it from the document. A crash meanwhile leaves the
        entry missing, which ``DueTimes.reconcile`` restores at the next start: late, not lost.
        """
        lock = self._lock(doc_id)
        async with lock:
            return await self._mutate(doc_id, decide, message_id, expect_new, hold_due)

    async def _mutate(
        self,
        doc_id: str,
        decide: Decide,
        message_id: str | None,
        expect_new: bool = False,
        hold_due: bool = False,
    ) -> Outcome:
        for _ in range(self._max_attempts):
            current = self._recall(doc_id)
            remembered = current is not None
            guessed = current is None and expect_new
            expect_new = False  # only the first attempt guesses
            if current is None and not guessed:
                current = await self.load(doc_id)
            if current is not None and message_id is not None and message_id in current.applied:
                return Outcome(stored=current, duplicate=True)
            result = decide(current)
            change = await result if isinstance(result, Awaitable) else result
            if change is None:
                if remembered or guessed:
                    # A write checks the memory or the guess (compare-and-set, insert);
                    # "nothing to do" cannot, so it is decided again on a fresh read.
                    self._forget(doc_id)
                    continue
                return Outcome(stored=current)
            written = await self._write(doc_id, current, change, message_id)
            if written is None:
                self._forget(doc_id)  # stale or raced: read it on the next attempt
            else:
                self._remember(written)
                await self._update_due(doc_id, current, written, hold=hold_due)
                if change.events:
                    if self._on_written is not None:
                        self._on_written(self, written)
                    elif self._on_events is not None:
                        self._on_events()
                return Outcome(stored=written, changed=True, events=list(change.events))
        raise ConcurrencyConflict(f"{self.collection.name}/{doc_id}: too many concurrent writers")

    async def _write(
        self, doc_id: str, current: Stored | None, change: Change, message_id: str | None
    ) -> Stored | None:
        bad = RESERVED_FIELDS.intersection(change.state)
        if bad:
            raise ValueError(f"state may not set reserved fields {sorted(bad)}")
        applied = list(current.applied) if current else []
        if message_id is not None:
            applied = [*applied, message_id][-self._applied_limit :]
        outbox = [*(current.outbox if current else ()), *(e.to_document() for e in change.events)]
        fields: Document = {
            **change.state,
            "applied": applied,
            "outbox": outbox,
            "outbox_pending": bool(outbox),
        }
        if current is None:
            try:
                await self.collection.insert_one({"_id": doc_id, "version": 1, **fields})
            except DuplicateKeyError:
                return None  # someone created it first: reload and decide again
            return Stored(doc_id, change.state, 1, tuple(applied), tuple(outbox))
        version = current.version + 1
        # Fields the new state dropped are unset, so the document mirrors the aggregate.
        removed = {k: "" for k in current.state if k not in change.state}
        update: Document = {"$set": {**fields, "version": version}}
        if removed:
            update["$unset"] = removed
        if not await self._compare_and_set(doc_id, current.version, update):
            return None
        return Stored(doc_id, change.state, version, tuple(applied), tuple(outbox))

    async def _compare_and_set(
        self, doc_id: str, version: int, update: Document, *, just_read: bool = False
    ) -> bool:
        """Apply ``update`` if the document is still at ``version``; the caller holds its lock."""
        if not await self._exact_id_filters_only():
            result = await self.collection.update_one({"_id": doc_id, "version": version}, update)
            return bool(result.matched_count)
        if not just_read:
            doc = await self.collection.find_one({"_id": doc_id}, {"version": 1})
            if doc is None or int(doc.get("version", 0)) != version:
                return False
        result = await self.collection.update_one({"_id": doc_id}, update)
        return bool(result.matched_count)

    async def _exact_id_filters_only(self) -> bool:
        """FerretDB that pushes down nothing but an exact ``{_id: value}`` (on SQLite); on
        PostgreSQL it pushes ``{_id, version}`` down to an index as well."""
        if self._id_filters_only is None:
            try:
                info = await self.collection.database.command("buildInfo")
                ferretdb = "ferretdbVersion" in info
                pushed_down = False
                if ferretdb:
                    plan = await self.collection.database.command(
                        "explain",
                        {"find": self.collection.name, "filter": {"_id": "", "version": 0}},
                    )
                    pushed_down = bool(plan.get("filterPushdown"))
            except PyMongoError:
                return False  # asked again at the next write
            self._id_filters_only = ferretdb and not pushed_down
        return self._id_filters_only

    async def _update_due(
        self, doc_id: str, before: Stored | None, after: Stored, *, hold: bool = False
    ) -> None:
        if self.due is None:
            return
        if doc_id in self._held_due or hold:
            # An entry exists only if one was written before the hold began.
            may_exist = self._held_due.pop(doc_id, before is not None)
            if hold:
                self._held_due[doc_id] = may_exist
                return
            if not may_exist and self.due.due_of(after.state) is None:
                return  # never written, nothing to remove
        elif self.due.due_of(before.state if before else None) == self.due.due_of(after.state):
            return
        try:
            await self.due.put(doc_id, after.state)
        except Exception:
            # The write itself stands; the reconcile pass restores the entry.
            log.warning(
                "due time of %s not recorded; the reconcile pass will", doc_id, exc_info=True
            )

    def due_held(self, doc_id: str) -> bool:
        return doc_id in self._held_due

    async def release_due(self, doc_id: str) -> bool:
        """Write the due entry a ``hold_due`` held back, from the document as it is now (after
        an attempt that stopped without a write that did it). False if the store failed: the
        entry stays held, for another try (or the reconcile pass)."""
        if self.due is None or doc_id not in self._held_due:
            return True
        async with self._lock(doc_id):
            may_exist = self._held_due.pop(doc_id, None)
            if may_exist is None:
                return True
            try:
                await self.due.refresh(doc_id, await self.load(doc_id))
            except Exception:
                self._held_due[doc_id] = may_exist
                log.warning("due time of %s not recorded yet", doc_id, exc_info=True)
                return False
            return True

    def _relayed(self, doc_id: str, version: int, remaining: list[Document]) -> None:
        """Keep the memory of a document in step with the relay's removal."""
        entry = self._written.get(doc_id)
        if entry is not None and entry[1].version == version:
            stored = replace(entry[1], version=version + 1, outbox=tuple(remaining))
            self._written[doc_id] = (entry[0], stored)
        else:
            self._forget(doc_id)

    def outbox_message(self, item: Document) -> OutboxMessage:
        return OutboxMessage.from_document(item)

    async def pending_outbox(self, limit: int) -> list[Document]:
        """Documents holding events the relay has not published yet."""
        cursor = self.collection.find({"outbox_pending": True}, {"outbox": 1, "version": 1})
        return await cursor.limit(limit).to_list()

    async def remove_relayed(
        self,
        doc_id: str,
        sent: set[str],
        *,
        version: int | None = None,
        outbox: Sequence[Document] | None = None,
    ) -> bool:
        """Drop published events, under the same lock and compare-and-set as every writer.

        With the ``version`` and ``outbox`` the relay saw, one compare-and-set does it when the
        document has not changed since; otherwise it is read again.
        """
        async with self._lock(doc_id):
            if version is not None and outbox is not None:
                remaining = [m for m in outbox if m.get("id") not in sent]
                if await self._compare_and_set(
                    doc_id, version, _relayed_update(remaining, version)
                ):
                    self._relayed(doc_id, version, remaining)
                    return True
            self._forget(doc_id)
            for _ in range(self._max_attempts):
                doc = await self.collection.find_one({"_id": doc_id}, {"outbox": 1, "version": 1})
                if doc is None:
                    return False
                outbox_now = list(doc.get("outbox") or ())
                remaining = [m for m in outbox_now if m.get("id") not in sent]
                if len(remaining) == len(outbox_now):
                    return True  # another pass removed them already: nothing to write
                current = int(doc.get("version", 0))
                update = _relayed_update(remaining, current)
                if await self._compare_and_set(doc_id, current, update, just_read=True):
                    return True
        return False


def _relayed_update(remaining: list[Document], version: int) -> Document:
    return {
        "$set": {"outbox": remaining, "outbox_pending": bool(remaining), "version": version + 1}
    }


def _stored(doc: Document) -> Stored:
    state = {k: v for k, v in doc.items() if k not in RESERVED_FIELDS}
    return Stored(
        id=str(doc["_id"]),
        state=state,
        version=int(doc.get("version", 0)),
        applied=tuple(doc.get("applied", ())),
        outbox=tuple(doc.get("outbox", ())),
    )


def state_of(stored: Stored | None) -> dict[str, Any] | None:
    return stored.state if stored else None
