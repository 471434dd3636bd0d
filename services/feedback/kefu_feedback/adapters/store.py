"""Facts, surveys, survey customers and rounds as documents, and the KPI queries.

Facts are written with a plain ``insert_one`` whose ``_id`` is the fact's natural key: a
duplicate is refused by the server (on FerretDB too), which is the whole deduplication. Surveys,
customers and rounds are aggregates behind ``VersionedDocumentStore`` (state, outbox and the
applied message ids in one document).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime

from kefu_shared.mongo import Collection, Document, IndexSpec
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from kefu_feedback.domain.facts import Fact, FactKind
from kefu_feedback.domain.kpis import SurveyRecord
from kefu_feedback.domain.rounds import RoundStatus, SurveyRound
from kefu_feedback.domain.survey import Survey, SurveyCustomer, SurveyStatus

FACTS = "facts"
SURVEYS = "surveys"
CUSTOMERS = "survey_customers"
ROUNDS = "survey_rounds"

INDEXES = [
    # The period scan of every KPI query.
    IndexSpec(FACTS, [("at", ASCENDING)], name="by_time"),
    # The rest of an inquiry's (an order's) history, wherever it falls in time.
    IndexSpec(FACTS, [("inquiry_id", ASCENDING)], name="by_inquiry"),
    IndexSpec(FACTS, [("order_id", ASCENDING)], name="by_order"),
    # A round's population: customers who opened inquiries lately; a customer's language.
    IndexSpec(FACTS, [("kind", ASCENDING), ("at", ASCENDING)], name="by_kind_time"),
    IndexSpec(FACTS, [("customer_id", ASCENDING), ("kind", ASCENDING)], name="by_customer"),
    IndexSpec(SURVEYS, [("case_at", ASCENDING)], name="by_case_time"),
    IndexSpec(SURVEYS, [("answered_at", ASCENDING)], name="by_answer_time"),
    IndexSpec(CUSTOMERS, [("last_invited_at", DESCENDING)], name="by_last_invited"),
    IndexSpec(ROUNDS, [("status", ASCENDING)], name="by_status"),
]

_CHUNK = 500  # ids per $in query: keeps each command small


def fact_to_document(fact: Fact) -> Document:
    fields = {k: v for k, v in dataclasses.asdict(fact).items() if v is not None}
    fields["_id"] = fields.pop("id")
    fields["kind"] = fact.kind.value
    return fields


def fact_from_document(doc: Document) -> Fact:
    names = {f.name for f in dataclasses.fields(Fact)}
    values = {k: v for k, v in doc.items() if k in names}
    values["id"] = str(doc["_id"])
    values["kind"] = FactKind(doc["kind"])
    return Fact(**values)


class FactStore:
    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def record(self, facts: Iterable[Fact]) -> tuple[int, int]:
        """Insert each fact once; returns (recorded, duplicates)."""
        recorded = duplicates = 0
        for fact in facts:
            try:
                await self._collection.insert_one(fact_to_document(fact))
            except DuplicateKeyError:
                duplicates += 1
            else:
                recorded += 1
        return recorded, duplicates

    async def get(self, fact_id: str) -> Fact | None:
        doc = await self._collection.find_one({"_id": fact_id})
        return fact_from_document(doc) if doc else None

    async def facts_for(self, start: datetime, end: datetime) -> list[Fact]:
        """The period's facts plus the rest of the history of the inquiries and orders they
        mention (replies before the period, reopenings and refunds after it)."""
        found: dict[str, Document] = {}
        async for doc in self._collection.find({"at": {"$gte": start, "$lt": end}}):
            found[str(doc["_id"])] = doc
        inquiries = sorted({d["inquiry_id"] for d in found.values() if d.get("inquiry_id")})
        orders = sorted({d["order_id"] for d in found.values() if d.get("order_id")})
        for field, ids in (("inquiry_id", inquiries), ("order_id", orders)):
            for chunk in _chunks(ids):
                async for doc in self._collection.find({field: {"$in": chunk}}):
                    found[str(doc["_id"])] = doc
        return [fact_from_document(d) for d in found.values()]

    async def customers_served(self, start: datetime, end: datetime) -> set[str]:
        """Customers who opened an inquiry in ``[start, end)``: a round's population."""
        cursor = self._collection.find(
            {"kind": FactKind.OPENED.value, "at": {"$gte": start, "$lt": end}},
            {"customer_id": 1, "category": 1},
        )
        return {str(d["customer_id"]) async for d in cursor if d.get("customer_id")}

    async def latest_language(self, customer_id: str) -> str | None:
        cursor = (
            self._collection.find(
                {"customer_id": customer_id, "kind": FactKind.OPENED.value}, {"language": 1}
            )
            .sort("at", DESCENDING)
            .limit(1)
        )
        docs = await cursor.to_list()
        return str(docs[0]["language"]) if docs and docs[0].get("language") else None


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield list(ids[i : i + _CHUNK])


# --- surveys ------------------------------------------------------------------------------


def survey_to_state(survey: Survey) -> Document:
    state = survey.model_dump(mode="python")
    # Top-level copy of the answer time: the KPI query's index and range filter.
    state["answered_at"] = survey.answer.answered_at if survey.answer else None
    return state


def survey_from_state(state: Document) -> Survey:
    return Survey.model_validate(state)


def survey_record(survey: Survey) -> SurveyRecord:
    answer = survey.answer
    return SurveyRecord(
        survey_id=survey.survey_id,
        kind=survey.kind.value,
        agent_id=survey.agent_id,
        channel=survey.channel,
        category=survey.category,
        invited=survey.invited,
        undeliverable=survey.status is SurveyStatus.UNDELIVERABLE,
        case_at=survey.case_at,
        answered_at=answer.answered_at if answer else None,
        overall=answer.overall if answer else None,
        ratings={d.value: r for d, r in answer.ratings.items()} if answer else {},
    )


_SURVEY_PROJECTION = {"outbox": 0, "applied": 0, "outbox_pending": 0}


class SurveyQueries:
    def __init__(self, surveys: Collection, customers: Collection, rounds: Collection) -> None:
        self._surveys = surveys
        self._customers = customers
        self._rounds = rounds

    async def records_for(self, start: datetime, end: datetime) -> list[SurveyRecord]:
        """Surveys of cases that ended in the period or answered in it."""
        found: dict[str, Document] = {}
        for field in ("case_at", "answered_at"):
            cursor = self._surveys.find({field: {"$gte": start, "$lt": end}}, _SURVEY_PROJECTION)
            async for doc in cursor:
                found[str(doc["_id"])] = doc
        return [survey_record(survey_from_state(d)) for d in found.values()]

    async def not_to_survey(self, invited_since: datetime) -> set[str]:
        """Customers opted out or invited since the given time."""
        out: set[str] = set()
        for query in ({"opted_out": True}, {"last_invited_at": {"$gte": invited_since}}):
            async for doc in self._customers.find(query, {"_id": 1}):
                out.add(str(doc["_id"]))
        return out

    async def rounds_issuing(self, limit: int) -> list[str]:
        cursor = self._rounds.find({"status": RoundStatus.ISSUING.value}, {"_id": 1})
        return [str(d["_id"]) for d in await cursor.limit(limit).to_list()]


# --- customers and rounds -----------------------------------------------------------------


def customer_from_state(customer_id: str, state: Document | None) -> SurveyCustomer:
    return SurveyCustomer.model_validate({**(state or {}), "customer_id": customer_id})


def customer_to_state(customer: SurveyCustomer) -> Document:
    return customer.model_dump(mode="python", exclude={"customer_id"})


def round_to_state(survey_round: SurveyRound) -> Document:
    return survey_round.model_dump(mode="python")


def round_from_state(state: Document) -> SurveyRound:
    return SurveyRound.model_validate(state)
