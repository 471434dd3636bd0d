"""HTTP: orders as agents see them, verified changes, recorded contacts and the duty roster."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from kefu_shared.audit import AuditLog
from kefu_shared.auth import MANAGERS, STAFF, Principal, Role, current_principal, requires
from kefu_shared.contracts.orders import ORDER_ID_PATTERN, DeliveryAddress
from kefu_shared.correlation import current_correlation_id
from kefu_shared.envelope import new_id
from kefu_shared.pii import redact_card_numbers
from kefu_shared.topics import Channel
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kefu_orders import handlers
from kefu_orders.domain.changes import (
    ONE_TIME_CODE,
    ORDER_DETAILS,
    ChangeRequest,
    LineChange,
    Proof,
)
from kefu_orders.domain.contacts import ContactRecord, Timeline
from kefu_orders.domain.order import Invalid, Order, OrderStatus, Rejected, ms
from kefu_orders.domain.roster import DutyRoster
from kefu_orders.handlers import Context, Deps, NotFound

OrderId = Annotated[str, Path(pattern=ORDER_ID_PATTERN)]
Caller = Annotated[Principal, Depends(current_principal)]
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$"
MAX_LIMIT = 100
# As in inquiry (DOMAIN.md 6, least privilege): everyone sees the receiver's phone, street and
# name masked; supervisors and admins may ask for them unmasked, and each such look is audited.
MAY_UNMASK = MANAGERS
UNMASKED_ACTION = "pii.unmasked"
Unmasked = Annotated[
    bool,
    Query(
        description="Supervisors and admins: show the receiver's phone, street and name "
        "in clear (the look is written to the audit log, GET /audit)."
    ),
]


def _mask_phone(phone: str) -> str:
    digits = phone.strip()
    if len(digits) <= 4:
        return "*" * len(digits)
    return digits[:3] + "*" * max(len(digits) - 7, 1) + digits[-4:]


def _mask_text(text: str, keep: int) -> str:
    text = text.strip()
    return text[:keep] + "***" if len(text) > keep else text


def _masked_address(address: dict[str, Any]) -> dict[str, Any]:
    masked = dict(address)
    if "phone" in masked:
        masked["phone"] = _mask_phone(str(masked["phone"] or ""))
    if "street" in masked:
        masked["street"] = _mask_text(str(masked["street"] or ""), 4)
    if "receiver" in masked:
        masked["receiver"] = _mask_text(str(masked["receiver"] or ""), 1)
    return masked


def _masked_audit(entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    for side in ("before", "after"):
        part = out.get(side)
        if isinstance(part, dict) and isinstance(part.get("address"), dict):
            out[side] = {**part, "address": _masked_address(part["address"])}
    return out


class OrderView(BaseModel):
    """An order as the API shows it. The receiver's phone, street and name are masked unless
    a supervisor or admin asked for them (audited); the customer's notice contacts are never
    shown."""

    id: str
    customer_id: str
    customer_name: str
    channel: str
    marketplace: str | None
    status: OrderStatus
    lines: list[dict[str, Any]]
    currency: str
    discount_cents: int
    shipping_fee_cents: int
    total_cents: int
    address: dict[str, Any]
    buyer_note: str
    requested_courier: str | None
    placed_at: datetime
    paid_at: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    cancelled_at: datetime | None
    expired_at: datetime | None
    carrier: str | None
    carrier_name: str | None
    tracking_number: str | None
    refunds: list[dict[str, Any]]
    review: dict[str, Any] | None
    courier: dict[str, Any] | None
    no_courier_coverage: bool
    on_duty_agent_id: str | None
    timers: list[dict[str, Any]]
    lost: dict[str, Any] | None
    follow_up_closed: bool
    changes: list[dict[str, Any]]
    attribution: dict[str, Any] | None

    @classmethod
    def of(cls, order: Order, *, unmasked: bool = False) -> OrderView:
        data = order.model_dump(
            mode="json", exclude={"contact", "verifications", "audit", "details_failures"}
        )
        if not unmasked:
            data["address"] = _masked_address(data["address"])
        return cls.model_validate(data)


class OrderList(BaseModel):
    items: list[OrderView]


class AddressBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    province: str = Field(min_length=1, max_length=64)
    city: str = Field(min_length=1, max_length=64)
    district: str = Field(min_length=1, max_length=64)
    street: str = Field(min_length=1, max_length=300)
    receiver: str = Field(min_length=1, max_length=100)
    phone: str = Field(min_length=5, max_length=32, pattern=r"^\+?[0-9][0-9 -]{4,30}$")
    postal_code: str = Field(default="", max_length=16)


class LineBody(BaseModel):
    """A line of the order after the change: an existing sku with its new quantity, or a new
    item with its name and catalogue price. Lines left out are removed."""

    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=1, le=100_000)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    category: str | None = Field(default=None, max_length=64)
    unit_price_cents: int | None = Field(default=None, ge=0)


class VerificationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["one_time_code", "order_details"]
    verification_id: str | None = Field(default=None, max_length=100)
    code: str | None = Field(default=None, pattern=r"^[0-9]{4,8}$")
    receiver: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.method == ONE_TIME_CODE and not (self.verification_id and self.code):
            raise ValueError("verification_id and code are required for one_time_code")
        if self.method == ORDER_DETAILS and not (self.receiver and self.phone):
            raise ValueError("receiver and phone are required for order_details")
        return self


class ChangeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    change_id: str | None = Field(
        default=None,
        pattern=KEY_PATTERN,
        description="Idempotency key; the same id twice changes the order once.",
    )
    address: AddressBody | None = None
    lines: list[LineBody] | None = Field(default=None, min_length=1, max_length=200)
    verification: VerificationBody

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.address is None and self.lines is None:
            raise ValueError("address or lines: a change needs at least one of them")
        return self


class ChangeResult(BaseModel):
    outcome: str
    order: OrderView


class VerificationStarted(BaseModel):
    verification_id: str
    method: str = ONE_TIME_CODE
    expires_at: datetime


class ContactBody(BaseModel):
    """A contact outside the inquiry channels (phone, WeChat, QQ), kept as evidence."""

    model_config = ConfigDict(extra="forbid")

    contact_id: str | None = Field(default=None, pattern=KEY_PATTERN)
    customer_id: str = Field(min_length=1, max_length=200)
    agent_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="Defaults to the caller."
    )
    channel: Literal["phone", "wechat", "qq", "other"]
    at: datetime
    category: Literal["product", "order", "payment", "logistics", "after_sales", "complaint"] = (
        "order"
    )
    evidence_ref: str = Field(
        min_length=1, max_length=500, description="Where the screenshot or recording is kept."
    )
    note: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _aware(self) -> Self:
        if self.at.tzinfo is None:
            raise ValueError("at: must carry a timezone")
        return self


class Recorded(BaseModel):
    contact_id: str
    outcome: str


class OnDuty(BaseModel):
    at: datetime
    agent_id: str | None


def _is_staff(principal: Principal) -> bool:
    return principal.role in STAFF


def make_router(deps: Deps, audit: AuditLog) -> APIRouter:
    router = APIRouter(tags=["orders"])

    async def unmask(request: Request, principal: Principal, order_id: str, what: str) -> None:
        """Refuse roles that may not unmask; record the look (who, when, what, from where)."""
        if principal.role not in MAY_UNMASK:
            raise HTTPException(403, "unmasked: only supervisors and admins")
        await audit.record(
            actor=principal.subject,
            role=principal.role.value,
            action=UNMASKED_ACTION,
            subject=order_id,
            source=request.client.host if request.client else "",
            reason=what,
        )

    managers = [Depends(requires(*MANAGERS))]
    staff = [Depends(requires(*STAFF))]
    staff_or_service = [Depends(requires(*STAFF, Role.SERVICE))]

    @router.get("/orders", response_model=OrderList, dependencies=staff_or_service)
    async def list_orders(
        principal: Caller,
        customer_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        status_: Annotated[OrderStatus | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    ) -> OrderList:
        found = await deps.queries.search(
            customer_id=customer_id, status=status_.value if status_ else None, limit=limit
        )
        return OrderList(items=[OrderView.of(o) for o in found])

    @router.get(
        "/orders/{order_id}",
        response_model=OrderView,
        dependencies=staff_or_service,
        responses={404: {"description": "No such order."}},
    )
    async def get_order(
        order_id: OrderId, principal: Caller, request: Request, unmasked: Unmasked = False
    ) -> OrderView:
        if unmasked and principal.role not in MAY_UNMASK:
            raise HTTPException(403, "unmasked: only supervisors and admins")
        order = await deps.queries.get(order_id)
        if order is None:
            raise HTTPException(404, f"order_id: no order {order_id}")
        if unmasked:
            await unmask(request, principal, order_id, "delivery address")
        return OrderView.of(order, unmasked=unmasked)

    @router.get(
        "/orders/{order_id}/audit",
        dependencies=managers,
        summary="Who changed the order, failed to verify, or was refused; before and after.",
    )
    async def get_audit(
        order_id: OrderId, principal: Caller, request: Request, unmasked: Unmasked = False
    ) -> dict[str, Any]:
        """Addresses in the before/after are masked unless asked for (that look is audited)."""
        order = await deps.queries.get(order_id)
        if order is None:
            raise HTTPException(404, f"order_id: no order {order_id}")
        entries = [a.model_dump(mode="json") for a in order.audit]
        if unmasked:
            await unmask(request, principal, order_id, "address history")
        else:
            entries = [_masked_audit(e) for e in entries]
        return {"order_id": order_id, "entries": entries}

    @router.get(
        "/audit",
        tags=["audit"],
        dependencies=managers,
        summary="Unmasked looks at personal data (who, when, which order, from where), newest "
        "first. Append-only: no endpoint changes it.",
    )
    async def get_access_audit(
        subject: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        action: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        found = await audit.entries(subject=subject, action=action, limit=limit)
        return {
            "entries": [
                {
                    "id": e.id,
                    "actor": e.actor,
                    "role": e.role,
                    "action": e.action,
                    "subject": e.subject,
                    "at": e.at.isoformat(),
                    "source": e.source,
                    "reason": e.reason,
                }
                for e in found
            ]
        }

    @router.post(
        "/orders/{order_id}/verifications",
        response_model=VerificationStarted,
        status_code=status.HTTP_201_CREATED,
        dependencies=staff_or_service,
        summary="Send the customer a one-time code to verify a change.",
        responses={404: {"description": "No such order."}, 409: {"description": "Shipped."}},
    )
    async def start_verification(order_id: OrderId, principal: Caller) -> VerificationStarted:
        actor = handlers.actor_of(_is_staff(principal), principal.subject)
        try:
            verification_id, expires_at = await handlers.request_verification(
                order_id, actor, deps, _ctx()
            )
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except Rejected as exc:
            raise HTTPException(409, str(exc)) from exc
        return VerificationStarted(verification_id=verification_id, expires_at=expires_at)

    @router.post(
        "/orders/{order_id}/changes",
        response_model=ChangeResult,
        dependencies=staff_or_service,
        summary="Change the address, items or quantities after identity verification.",
        responses={
            403: {"description": "Identity verification failed (audited)."},
            404: {"description": "No such order."},
            409: {"description": "The order shipped or closed: no changes (audited)."},
            422: {"description": "The change itself is invalid (names the field)."},
        },
    )
    async def change(order_id: OrderId, body: ChangeBody, principal: Caller) -> ChangeResult:
        request = ChangeRequest(
            address=DeliveryAddress(**body.address.model_dump()) if body.address else None,
            lines=[LineChange(**line.model_dump()) for line in body.lines]
            if body.lines is not None
            else None,
        )
        v = body.verification
        proof = Proof(
            method=v.method,
            verification_id=v.verification_id,
            code=v.code,
            receiver=v.receiver,
            phone=v.phone,
        )
        try:
            outcome, order = await handlers.change_order(
                order_id,
                change_id=body.change_id or new_id(),
                request=request,
                proof=proof,
                actor=handlers.actor_of(_is_staff(principal), principal.subject),
                deps=deps,
                ctx=_ctx(),
            )
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except Invalid as exc:
            deps.metrics.changes.labels("invalid").inc()
            raise HTTPException(422, str(exc)) from exc
        if outcome == "verification_failed":
            last = order.audit[-1].detail if order.audit else ""
            raise HTTPException(403, f"verification: {last}")
        if outcome == "refused":
            raise HTTPException(
                409, f"status: order {order_id} is {order.status.value}; no changes after shipping"
            )
        return ChangeResult(outcome=outcome, order=OrderView.of(order))

    @router.post(
        "/contacts",
        response_model=Recorded,
        status_code=status.HTTP_201_CREATED,
        dependencies=staff,
        summary="Record a phone/WeChat/QQ contact with a customer as attribution evidence.",
    )
    async def record_contact(body: ContactBody, principal: Caller) -> Recorded:
        contact_id = body.contact_id or new_id()
        record = ContactRecord(
            agent_id=body.agent_id or principal.subject,
            at=ms(body.at),
            conversation=f"recorded:{contact_id}",
            channel=Channel.PHONE.value if body.channel == "phone" else Channel.SOCIAL.value,
            category=body.category,
            source="recorded",
            evidence_ref=body.evidence_ref,
            note=redact_card_numbers(f"{body.channel}: {body.note}".strip()),
            recorded_by=principal.subject,
        )
        outcome = await handlers.record_contact(
            body.customer_id, record, contact_id=contact_id, deps=deps, ctx=_ctx()
        )
        return Recorded(contact_id=contact_id, outcome=outcome)

    @router.get(
        "/customers/{customer_id}/contacts",
        dependencies=managers,
        summary="The evidence of which agent talked to the customer, when (kept 15+ days).",
    )
    async def customer_contacts(
        customer_id: Annotated[str, Path(min_length=1, max_length=200)],
    ) -> dict[str, Any]:
        stored = await deps.timelines.load(customer_id)
        if stored is None:
            return {"customer_id": customer_id, "contacts": []}
        timeline = Timeline.from_state(stored.state)
        return {
            "customer_id": customer_id,
            "contacts": [c.model_dump(mode="json") for c in timeline.contacts],
        }

    @router.get("/duty-roster", response_model=DutyRoster)
    async def get_roster() -> DutyRoster:
        return await deps.roster.current()

    @router.put(
        "/duty-roster",
        response_model=DutyRoster,
        dependencies=managers,
        summary="Replace the duty roster (lost orders count for the agent on duty).",
    )
    async def put_roster(body: DutyRoster, principal: Caller) -> DutyRoster:
        return await handlers.put_roster(body, by=principal.subject, deps=deps)

    @router.get("/duty-roster/on-duty", response_model=OnDuty)
    async def on_duty(at: datetime | None = None) -> OnDuty:
        moment = at or deps.now()
        if moment.tzinfo is None:
            raise HTTPException(422, "at: must carry a timezone")
        roster = await deps.roster.current()
        return OnDuty(at=moment, agent_id=roster.on_duty(moment))

    return router


def _ctx() -> Context:
    return Context(correlation_id=current_correlation_id.get())
