"""HTTP: the delivery log and customer preferences."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from kefu_shared.auth import STAFF, Role, requires
from kefu_shared.contracts.notifier import (
    IDEMPOTENCY_KEY_PATTERN,
    NotificationChannel,
    NotificationPurpose,
)
from pydantic import BaseModel, ConfigDict, Field

from kefu_notifier.domain.catalogue import TRANSACTIONAL_PURPOSES
from kefu_notifier.domain.delivery import DeliveryStatus
from kefu_notifier.domain.policies import Preferences
from kefu_notifier.handlers import NotifierDeps, get_preferences, set_preferences

MAX_LIMIT = 100


class DeliveryView(BaseModel):
    """One line of the delivery log (the rendered text and addresses are not shown)."""

    idempotency_key: str
    delivery_id: str
    customer_id: str
    purpose: NotificationPurpose
    template: str
    language: str
    requested_by: str
    status: DeliveryStatus
    attempts: int
    channel: NotificationChannel | None = None
    reason: str | None = Field(default=None, description="Why deferred, failed or suppressed.")
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    provider_message_id: str | None = None
    correlation_id: str
    request_message_id: str


class DeliveryList(BaseModel):
    items: list[DeliveryView]


class PreferencesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    opted_out_purposes: list[NotificationPurpose] = Field(default_factory=list)
    opted_out_channels: list[NotificationChannel] = Field(default_factory=list)


class PreferencesView(PreferencesBody):
    customer_id: str
    always_delivered: list[NotificationPurpose] = Field(
        description="Transactional purposes that bypass opt-out (e.g. verification codes)."
    )


def _view(customer_id: str, prefs: Preferences) -> PreferencesView:
    return PreferencesView(
        customer_id=customer_id,
        opted_out_purposes=sorted(prefs.opted_out_purposes),
        opted_out_channels=sorted(prefs.opted_out_channels),
        always_delivered=sorted(TRANSACTIONAL_PURPOSES),
    )


CustomerId = Annotated[str, Path(min_length=1, max_length=128)]


# Staff and the shop's systems read deliveries and change a customer's preferences for them.
STAFF_OR_SERVICE = [Depends(requires(*STAFF, Role.SERVICE))]


def make_router(deps: NotifierDeps) -> APIRouter:
    router = APIRouter(tags=["notifier"], dependencies=STAFF_OR_SERVICE)

    @router.get(
        "/deliveries/{idempotency_key}",
        response_model=DeliveryView,
        summary="One delivery's status, attempts, last error and timestamps.",
        responses={404: {"description": "No delivery with this idempotency key."}},
    )
    async def get_delivery(
        idempotency_key: Annotated[str, Path(pattern=IDEMPOTENCY_KEY_PATTERN)],
    ) -> dict[str, Any]:
        entry = await deps.delivery_log.get(idempotency_key)
        if entry is None:
            raise HTTPException(404, f"idempotency_key: no delivery {idempotency_key!r}")
        return entry

    @router.get(
        "/deliveries",
        response_model=DeliveryList,
        summary="The delivery log, newest first, by customer and/or status.",
    )
    async def list_deliveries(
        customer_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        status: DeliveryStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    ) -> dict[str, Any]:
        items = await deps.delivery_log.search(customer_id=customer_id, status=status, limit=limit)
        return {"items": items}

    @router.get("/customers/{customer_id}/preferences", response_model=PreferencesView)
    async def read_preferences(customer_id: CustomerId) -> PreferencesView:
        return _view(customer_id, await get_preferences(customer_id, deps))

    @router.put(
        "/customers/{customer_id}/preferences",
        response_model=PreferencesView,
        summary="Replace the customer's opted-out purposes and channels.",
    )
    async def write_preferences(customer_id: CustomerId, body: PreferencesBody) -> PreferencesView:
        prefs = await set_preferences(
            customer_id,
            opted_out_purposes=frozenset(body.opted_out_purposes),
            opted_out_channels=frozenset(body.opted_out_channels),
            deps=deps,
        )
        return _view(customer_id, prefs)

    return router
