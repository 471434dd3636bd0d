"""HTTP: webhook subscriptions (create, list, get, pause, resume, delete) and their delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from kefu_shared.auth import Principal, Role, current_principal, requires
from pydantic import BaseModel, ConfigDict, Field

from kefu_notifier.domain.event_patterns import EVENT_TYPE_PATTERN, MAX_PATTERN_LENGTH
from kefu_notifier.domain.webhook_delivery import WebhookDeliveryStatus
from kefu_notifier.domain.webhook_subscription import (
    Subscription,
    SubscriptionConflict,
    SubscriptionStatus,
)
from kefu_notifier.domain.webhook_targets import MAX_URL_LENGTH, TargetRefused
from kefu_notifier.webhook_handlers import (
    SubscriptionNotFound,
    WebhookDeps,
    create_subscription,
    delete_subscription,
    get_subscription,
    pause_subscription,
    resume_subscription,
)

MAX_LIMIT = 100
SUBSCRIPTION_ID_PATTERN = r"^wh_[0-9a-f]{1,64}$"

EventTypePattern = Annotated[str, Field(pattern=EVENT_TYPE_PATTERN, max_length=MAX_PATTERN_LENGTH)]


class SubscriptionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="http(s) URL the events are POSTed to; its host must resolve to public "
        "addresses only (unless KEFU_NOTIFIER_WEBHOOK_ALLOW_PRIVATE_TARGETS).",
    )
    event_types: list[EventTypePattern] = Field(
        min_length=1,
        max_length=50,
        description="Event types to receive: exact ('inquiry.received') or with '*' for one "
        "segment, as the last segment for one or more ('inquiry.*', '*').",
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="HMAC-SHA256 key for X-Kefu-Signature; generated when omitted. Shown only "
        "in the response to this request.",
    )
    description: str = Field(default="", max_length=200)


class SubscriptionView(BaseModel):
    """A subscription as the API shows it: never the secret, only its last characters."""

    id: str
    target_url: str
    event_types: list[str]
    description: str
    created_by: str = Field(description="Who created it (the token's subject), for audit.")
    status: SubscriptionStatus
    secret_hint: str = Field(description="'…' and the secret's last 4 characters.")
    created_at: datetime
    updated_at: datetime
    consecutive_failures: int = Field(description="Failed attempts in a row since a success.")
    failing_since: datetime | None = None
    last_error: str | None = None
    last_failure_at: datetime | None = None
    last_success_at: datetime | None = None
    disabled_reason: str | None = Field(
        default=None, description="Why the notifier switched it off (status disabled)."
    )
    disabled_at: datetime | None = None


class CreatedSubscriptionView(SubscriptionView):
    secret: str = Field(description="The signing secret: shown this once, store it now.")


class SubscriptionList(BaseModel):
    items: list[SubscriptionView]


class WebhookDeliveryView(BaseModel):
    """One line of a subscription's delivery log (the event body is not shown)."""

    delivery_id: str = Field(description="Sent as X-Kefu-Delivery-Id; the same on every retry.")
    subscription_id: str
    event_id: str
    event_type: str
    event_source: str
    event_subject: str
    status: WebhookDeliveryStatus
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDeliveryView]


def _view(s: Subscription) -> dict[str, Any]:
    return {
        "id": s.subscription_id,
        "target_url": s.target_url,
        "event_types": list(s.event_types),
        "description": s.description,
        "created_by": s.created_by,
        "status": s.status,
        "secret_hint": s.secret_hint,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "consecutive_failures": s.consecutive_failures,
        "failing_since": s.failing_since,
        "last_error": s.last_error,
        "last_failure_at": s.last_failure_at,
        "last_success_at": s.last_success_at,
        "disabled_reason": s.disabled_reason,
        "disabled_at": s.disabled_at,
    }


SubscriptionId = Annotated[str, Path(pattern=SUBSCRIPTION_ID_PATTERN)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such subscription (or it was deleted)."}
}


def _not_found(subscription_id: str) -> HTTPException:
    return HTTPException(404, f"id: no webhook subscription {subscription_id!r}")


# Subscriptions send kefu's events (customer messages included) out of the shop: only admins
# and integrated systems (service tokens) change them; supervisors may also look.
MANAGE = [Depends(requires(Role.ADMIN, Role.SERVICE))]
READ = [Depends(requires(Role.SUPERVISOR, Role.ADMIN, Role.SERVICE))]


def make_webhook_router(deps: WebhookDeps) -> APIRouter:
    router = APIRouter(prefix="/webhooks", tags=["webhooks"])

    @router.post(
        "",
        dependencies=MANAGE,
        status_code=201,
        response_model=CreatedSubscriptionView,
        summary="Subscribe an HTTP endpoint to kefu events (the secret is shown only here).",
        responses={422: {"description": "Invalid field, or a refused target_url (SSRF)."}},
    )
    async def create(
        body: SubscriptionBody, principal: Annotated[Principal, Depends(current_principal)]
    ) -> dict[str, Any]:
        try:
            subscription, secret = await create_subscription(
                target_url=body.target_url,
                event_types=tuple(body.event_types),
                secret=body.secret,
                description=body.description,
                created_by=principal.subject,
                deps=deps,
            )
        except TargetRefused as exc:
            # The shape of FastAPI's own validation errors, so clients handle one format.
            raise HTTPException(
                422,
                [{"loc": ["body", "target_url"], "msg": exc.reason, "type": "value_error"}],
            ) from exc
        return {**_view(subscription), "secret": secret}

    @router.get(
        "",
        dependencies=READ,
        response_model=SubscriptionList,
        summary="Subscriptions, newest first.",
    )
    async def list_all(
        status: SubscriptionStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        if status is SubscriptionStatus.DELETED:
            return {"items": []}
        items = await deps.webhook_log.list_subscriptions(status=status, limit=limit)
        return {"items": [_view(s) for s in items]}

    @router.get(
        "/{subscription_id}",
        dependencies=READ,
        response_model=SubscriptionView,
        responses=NOT_FOUND,
    )
    async def get_one(subscription_id: SubscriptionId) -> dict[str, Any]:
        try:
            return _view(await get_subscription(subscription_id, deps))
        except SubscriptionNotFound as exc:
            raise _not_found(subscription_id) from exc

    @router.post(
        "/{subscription_id}/pause",
        dependencies=MANAGE,
        response_model=SubscriptionView,
        summary="Stop POSTing; matching events are kept and sent on resume.",
        responses={**NOT_FOUND, 409: {"description": "A disabled subscription: resume it."}},
    )
    async def pause(subscription_id: SubscriptionId) -> dict[str, Any]:
        try:
            return _view(await pause_subscription(subscription_id, deps))
        except SubscriptionNotFound as exc:
            raise _not_found(subscription_id) from exc
        except SubscriptionConflict as exc:
            raise HTTPException(409, str(exc)) from exc

    @router.post(
        "/{subscription_id}/resume",
        dependencies=MANAGE,
        response_model=SubscriptionView,
        summary="POST again (also re-enables a disabled subscription with a fresh count).",
        responses=NOT_FOUND,
    )
    async def resume(subscription_id: SubscriptionId) -> dict[str, Any]:
        try:
            return _view(await resume_subscription(subscription_id, deps))
        except SubscriptionNotFound as exc:
            raise _not_found(subscription_id) from exc

    @router.delete(
        "/{subscription_id}",
        dependencies=MANAGE,
        status_code=204,
        summary="Delete the subscription and its pending deliveries.",
        responses=NOT_FOUND,
    )
    async def delete(subscription_id: SubscriptionId) -> Response:
        try:
            await delete_subscription(subscription_id, deps)
        except SubscriptionNotFound as exc:
            raise _not_found(subscription_id) from exc
        return Response(status_code=204)

    @router.get(
        "/{subscription_id}/deliveries",
        dependencies=READ,
        response_model=WebhookDeliveryList,
        summary="The subscription's delivery log, newest first.",
        responses=NOT_FOUND,
    )
    async def deliveries(
        subscription_id: SubscriptionId,
        status: WebhookDeliveryStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    ) -> dict[str, Any]:
        try:
            await get_subscription(subscription_id, deps)
        except SubscriptionNotFound as exc:
            raise _not_found(subscription_id) from exc
        items = await deps.webhook_log.deliveries_of(subscription_id, status=status, limit=limit)
        return {"items": items}

    return router
