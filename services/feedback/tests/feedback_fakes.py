"""In-memory stand-ins for the stores, for the use-case tests (same behaviour, no server)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kefu_feedback.adapters.metrics import FeedbackMetrics
from kefu_feedback.adapters.store import customer_from_state, survey_from_state, survey_record
from kefu_feedback.domain.facts import Fact, FactKind
from kefu_feedback.domain.kpis import SurveyRecord
from kefu_feedback.domain.links import SurveyLinks
from kefu_feedback.domain.policy import load_calendar, load_policy
from kefu_feedback.handlers import Deps
from kefu_shared.documents import Change, Outcome, Stored
from kefu_shared.outbox import OutboxMessage
from prometheus_client import CollectorRegistry


class FakeDocuments:
    """``VersionedDocumentStore``'s contract: decide on the current document, at most once
    per message id, events kept in an outbox list."""

    def __init__(self) -> None:
        self.docs: dict[str, Stored] = {}
        self.outbox: list[OutboxMessage] = []

    async def load(self, doc_id: str) -> Stored | None:
        return self.docs.get(doc_id)

    async def mutate(self, doc_id: str, decide: Any, *, message_id: str | None = None) -> Outcome:
        current = self.docs.get(doc_id)
        if current is not None and message_id is not None and message_id in current.applied:
            return Outcome(stored=current, duplicate=True)
        change: Change | None = decide(current)
        if change is None:
            return Outcome(stored=current)
        applied = (*(current.applied if current else ()), *([message_id] if message_id else []))
        stored = Stored(
            doc_id, dict(change.state), (current.version if current else 0) + 1, tuple(applied)
        )
        self.docs[doc_id] = stored
        self.outbox.extend(change.events)
        return Outcome(stored=stored, changed=True, events=list(change.events))


class FakeFacts:
    def __init__(self) -> None:
        self.facts: dict[str, Fact] = {}

    async def record(self, facts: Any) -> tuple[int, int]:
        new = dup = 0
        for f in facts:
            if f.id in self.facts:
                dup += 1
            else:
                self.facts[f.id] = f
                new += 1
        return new, dup

    async def get(self, fact_id: str) -> Fact | None:
        return self.facts.get(fact_id)

    async def facts_for(self, start: datetime, end: datetime) -> list[Fact]:
        return list(self.facts.values())

    async def customers_served(self, start: datetime, end: datetime) -> set[str]:
        return {
            f.customer_id
            for f in self.facts.values()
            if f.kind is FactKind.OPENED and start <= f.at < end and f.customer_id
        }

    async def latest_language(self, customer_id: str) -> str | None:
        return None


class FakeQueries:
    def __init__(
        self, surveys: FakeDocuments, customers: FakeDocuments, rounds: FakeDocuments
    ) -> None:
        self._surveys, self._customers, self._rounds = surveys, customers, rounds

    async def records_for(self, start: datetime, end: datetime) -> list[SurveyRecord]:
        return [survey_record(survey_from_state(s.state)) for s in self._surveys.docs.values()]

    async def not_to_survey(self, invited_since: datetime) -> set[str]:
        out = set()
        for key, stored in self._customers.docs.items():
            c = customer_from_state(key, stored.state)
            if c.opted_out or (c.last_invited_at and c.last_invited_at >= invited_since):
                out.add(key)
        return out

    async def rounds_issuing(self, limit: int) -> list[str]:
        return [k for k, s in self._rounds.docs.items() if s.state["status"] == "issuing"]


def fake_deps(now: datetime) -> Deps:
    surveys, customers, rounds = FakeDocuments(), FakeDocuments(), FakeDocuments()
    return Deps(
        facts=FakeFacts(),  # type: ignore[arg-type]
        surveys=surveys,  # type: ignore[arg-type]
        customers=customers,  # type: ignore[arg-type]
        rounds=rounds,  # type: ignore[arg-type]
        queries=FakeQueries(surveys, customers, rounds),  # type: ignore[arg-type]
        policy=load_policy(),
        calendar=load_calendar(),
        links=SurveyLinks("https://shop.example/feedback", "secret"),
        metrics=FeedbackMetrics(CollectorRegistry()),
        topic=lambda name: f"test.{name}",
        clock=lambda: now,
    )
