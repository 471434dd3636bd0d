"""Personal-data requests that every service honours (PIPL: the right to deletion).

``CustomerErasureRequested`` (v1) on ``topics.PRIVACY_REQUESTS``: an administrator asked to erase
a customer's personal data. Every service consumes it with its own consumer group, removes or
anonymises what it holds about the customer, and publishes ``CustomerDataErased`` (v1) on
``topics.PRIVACY_EVENTS`` saying what it did, so the requester can confirm that every service
has finished. Records needed for accounting (orders, refunds) keep their ids and amounts but
lose name, contact and address.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from kefu_shared import topics
from kefu_shared.envelope import EventData


class CustomerErasureRequested(EventData):
    """An administrator asked to erase one customer's personal data in every service."""

    event_type: ClassVar[str] = "privacy.erasure_requested"
    topic: ClassVar[str] = topics.PRIVACY_REQUESTS
    subject_field: ClassVar[str] = "customer_id"

    request_id: str = Field(min_length=1, description="Idempotency key of the request.")
    customer_id: str = Field(min_length=1, description="The customer whose data goes.")
    requested_by: str = Field(description="The administrator (token subject) who asked.")
    requested_at: datetime
    reason: str = Field(default="", description="e.g. the customer's own request.")


class CustomerDataErased(EventData):
    """One service finished erasing a customer's personal data."""

    event_type: ClassVar[str] = "privacy.data_erased"
    topic: ClassVar[str] = topics.PRIVACY_EVENTS
    subject_field: ClassVar[str] = "customer_id"

    request_id: str
    customer_id: str
    service: str = Field(description="The kefu service that erased its data.")
    documents: int = Field(ge=0, description="Documents removed or anonymised.")
    erased_at: datetime
