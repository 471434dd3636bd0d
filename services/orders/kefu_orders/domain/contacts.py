"""The customer's contact timeline: the evidence of which agent talked to the customer, when.

Fed by ``inquiry.agent_replied`` events (an agent answered the customer in an inquiry) and by
contacts agents record themselves for phone, WeChat or QQ (the handbook asks for that evidence
to be kept at least 15 days). The lost-order check and sales attribution read it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from kefu_orders.domain.attribution import Contact

MAX_CONTACTS = 500


class ContactRecord(BaseModel):
    agent_id: str
    at: datetime
    conversation: str = Field(description="Inquiry id, or recorded:<id> for a recorded contact.")
    channel: str | None = None
    category: str | None = None
    source: str = "inquiry"  # inquiry | recorded
    evidence_ref: str | None = None
    note: str = ""
    recorded_by: str | None = None

    def contact(self) -> Contact:
        return Contact(
            agent_id=self.agent_id,
            at=self.at,
            conversation=self.conversation,
            channel=self.channel,
            category=self.category,
        )


class Timeline(BaseModel):
    customer_id: str
    contacts: list[ContactRecord] = Field(default_factory=list)
    updated_at: datetime

    def to_state(self) -> dict[str, object]:
        return self.model_dump(mode="python")

    @classmethod
    def from_state(cls, state: dict[str, object]) -> Timeline:
        return cls.model_validate(state)

    def evidence(self) -> list[Contact]:
        return [c.contact() for c in self.contacts]


def add_contact(
    timeline: Timeline | None,
    customer_id: str,
    record: ContactRecord,
    *,
    retention: timedelta,
    now: datetime,
) -> Timeline | None:
    """The timeline with ``record`` in it (in time order, old evidence past the retention
    dropped); None if it holds that contact already."""
    current = timeline or Timeline(customer_id=customer_id, updated_at=now)
    key = (record.agent_id, record.at, record.conversation)
    if any((c.agent_id, c.at, c.conversation) == key for c in current.contacts):
        return None
    horizon = now - retention
    kept = [c for c in current.contacts if c.at >= horizon]
    if record.at < horizon:
        return None  # older than the evidence we keep: it could not change anything
    contacts = sorted([*kept, record], key=lambda c: c.at)[-MAX_CONTACTS:]
    return Timeline(customer_id=customer_id, contacts=contacts, updated_at=now)
