"""HTTP: intake, cases, the steps of the state machine, supervisors' decisions, review replies."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from kefu_shared.auth import MANAGERS, STAFF, Principal, Role, current_principal, requires
from kefu_shared.contracts.aftersales import (
    CASE_ID_PATTERN,
    CaseContact,
    CaseKind,
    CaseOrigin,
    CaseState,
    RequestReason,
    Verdict,
)
from kefu_shared.contracts.orders import ORDER_ID_PATTERN
from kefu_shared.correlation import current_correlation_id
from kefu_shared.pii import mask_email, mask_phone
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from kefu_aftersales import handlers
from kefu_aftersales.domain.case import Case, CaseDecision, DomainError, HistoryEntry, StepDetails
from kefu_aftersales.domain.orders import RequestedLine
from kefu_aftersales.handlers import Context, Deps, InvalidRequest, RequestCommand

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"
CHANNELS = r"^(chat|phone|email|social|marketplace|web|app|wechat)$"
MAX_LIMIT = 100

CaseId = Annotated[str, Path(pattern=CASE_ID_PATTERN)]
StaffOrService = Depends(requires(*STAFF, Role.SERVICE))
Staff = Depends(requires(*STAFF))
Managers = Depends(requires(*MANAGERS))
# As in inquiry (DOMAIN.md 6, least privilege): contacts are masked for everyone; supervisors
# and admins may ask for them unmasked, and each such look is audited.
MAY_UNMASK = MANAGERS
UNMASKED_ACTION = "pii.unmasked"
Unmasked = Annotated[
    bool,
    Query(
        description="Supervisors and admins: show the customer's contact in clear (the look "
        "is written to the audit log, GET /audit)."
    ),
]


# -- bodies -------------------------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineBody(Strict):
    sku: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=1, le=100_000)


class ContactBody(Strict):
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    wechat_openid: str | None = Field(default=None, max_length=128)
    marketplace_im_id: str | None = Field(default=None, max_length=128)


class RequestBody(Strict):
    """An after-sales request: what, for which order lines, why, with what evidence."""

    request_id: str | None = Field(
        default=None,
        pattern=KEY_PATTERN,
        description="Idempotency key: the same request_id twice opens one case.",
    )
    customer_id: str = Field(min_length=1, max_length=200)
    order_id: str = Field(pattern=ORDER_ID_PATTERN)
    kind: CaseKind = Field(description="return, exchange, refund_only, repair, quality_complaint")
    reason: RequestReason
    lines: list[LineBody] = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    evidence: list[AnyHttpUrl] = Field(
        default_factory=list, max_length=20, description="Links to photos or videos."
    )
    item_opened: bool = Field(default=False, description="Was the packaging opened?")
    channel: str | None = Field(default=None, pattern=CHANNELS)
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Za-z]{2,4})?$")
    contact: ContactBody | None = None

    @field_validator("kind")
    @classmethod
    def _not_a_review(cls, value: CaseKind) -> CaseKind:
        if value is CaseKind.NEGATIVE_REVIEW:
            raise ValueError("negative reviews arrive from the marketplace, not as requests")
        return value

    def command(self) -> RequestCommand:
        return RequestCommand(
            customer_id=self.customer_id.strip(),
            order_id=self.order_id,
            kind=self.kind,
            reason=self.reason,
            lines=[RequestedLine(line.sku, line.quantity) for line in self.lines],
            description=self.description,
            evidence=[str(url) for url in self.evidence],
            item_opened=self.item_opened,
            channel=self.channel,
            language=self.language,
            contact=CaseContact(**self.contact.model_dump()) if self.contact else None,
            request_id=self.request_id,
        )


class DecisionBody(Strict):
    verdict: Literal["approved", "rejected"]
    reason: str = Field(min_length=1, max_length=1000, description="Audited; told if rejected.")
    command_id: str | None = Field(default=None, pattern=KEY_PATTERN)


class ReturnParcelBody(Strict):
    carrier: str = Field(min_length=1, max_length=64)
    tracking_number: str = Field(min_length=1, max_length=64)


class TransitionBody(Strict):
    """One step; which optional fields a step needs depends on ``to`` (see the README)."""

    to: CaseState
    note: str = Field(default="", max_length=2000)
    carrier: str | None = Field(default=None, min_length=1, max_length=64)
    tracking_number: str | None = Field(default=None, min_length=1, max_length=64)
    inspection_passed: bool | None = None
    inspection_result: str | None = Field(default=None, max_length=1000)
    amount_cents: int | None = Field(default=None, ge=1)
    refund_reference: str | None = Field(default=None, max_length=100)
    override_reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Supervisors only: force a step the state machine refuses (audited).",
    )
    command_id: str | None = Field(default=None, pattern=KEY_PATTERN)

    def details(self) -> StepDetails:
        return StepDetails(
            note=self.note,
            carrier=self.carrier,
            tracking_number=self.tracking_number,
            inspection_passed=self.inspection_passed,
            inspection_result=self.inspection_result,
            amount_cents=self.amount_cents,
            refund_reference=self.refund_reference,
        )


class ReviewReplyBody(Strict):
    reply: str = Field(min_length=1, max_length=2000, description="Posted on the marketplace.")
    explanation: str = Field(min_length=1, max_length=4000, description="The cause, internal.")
    command_id: str | None = Field(default=None, pattern=KEY_PATTERN)


# -- views --------------------------------------------------------------------------------------


class LineView(BaseModel):
    sku: str
    quantity: int
    category: str
    unit_price_cents: int


class CaseView(BaseModel):
    """A case as staff see it: the contact is masked unless a supervisor or admin asked for it
    (audited; DOMAIN.md 6, least privilege)."""

    id: str
    kind: CaseKind
    origin: CaseOrigin
    state: CaseState
    customer_id: str
    order_id: str | None
    order_reference: str | None
    lines: list[LineView]
    reason: RequestReason | None
    description: str
    evidence: list[str]
    item_opened: bool
    channel: str | None
    language: str
    contact: CaseContact
    inquiry_id: str | None
    needs_completion: bool
    delivered_at: datetime | None
    currency: str | None
    value_cents: int
    decision: CaseDecision | None
    return_parcel: dict[str, Any] | None
    inspection: dict[str, Any] | None
    refund: dict[str, Any] | None
    shipment: dict[str, Any] | None
    review: dict[str, Any] | None
    resolution: str | None
    note: str
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    next_timer_at: datetime | None
    next_states: list[CaseState] = Field(description="Where an agent can move it next.")
    history: list[HistoryEntry]

    @classmethod
    def of(cls, case: Case, deps: Deps, *, unmasked: bool = False) -> CaseView:
        data = case.model_dump(
            mode="python",
            exclude={"contact", "auto_close_at", "lines"},
        )
        contact = case.contact
        return cls(
            **data,
            lines=[LineView(**line.model_dump()) for line in case.lines],
            contact=contact
            if unmasked
            else CaseContact(
                email=mask_email(contact.email),
                phone=mask_phone(contact.phone),
                wechat_openid="***" if contact.wechat_openid else None,
                marketplace_im_id="***" if contact.marketplace_im_id else None,
            ),
            value_cents=case.value_cents,
            next_states=sorted(deps.flows.next_states(case.kind, case.state)),
        )


class CaseList(BaseModel):
    items: list[CaseView]


class OrderView(BaseModel):
    order_id: str
    customer_id: str
    status: str
    delivered_at: datetime | None
    currency: str
    lines: list[LineView]


# -- errors -------------------------------------------------------------------------------------


def _ctx(principal: Principal) -> Context:
    return Context(
        correlation_id=current_correlation_id.get() or None,
        actor_id=principal.subject,
        role=principal.role.value,
    )


def _field_errors(problems: list[tuple[str, str]]) -> HTTPException:
    return HTTPException(
        422,
        detail=[
            {"loc": ["body", *field.split(".")], "msg": message, "type": "value_error"}
            for field, message in problems
        ],
    )


def _http_error(exc: Exception, deps: Deps) -> HTTPException:
    if isinstance(exc, InvalidRequest):
        return _field_errors([(p.field, p.message) for p in exc.problems])
    assert isinstance(exc, DomainError)
    if exc.not_found:
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    deps.metrics.refused.labels(exc.reason if not exc.field else "invalid_field").inc()
    if exc.field:
        return _field_errors([(exc.field, str(exc))])
    return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))


# -- routes -------------------------------------------------------------------------------------


def router(deps: Deps) -> APIRouter:
    api = APIRouter(tags=["aftersales"])
    errors = (DomainError, InvalidRequest)

    @api.post(
        "/cases",
        response_model=CaseView,
        status_code=status.HTTP_201_CREATED,
        dependencies=[StaffOrService],
        summary="File an after-sales request; it is checked against the order and reviewed.",
        responses={
            200: {"description": "The same request_id again: the case it opened."},
            409: {"description": "A line already has an open case."},
            422: {"description": "Invalid, or does not fit the order (the field is named)."},
        },
    )
    async def open_case(
        body: RequestBody,
        response: Response,
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> CaseView:
        try:
            case, created = await handlers.open_case(body.command(), deps, _ctx(principal))
        except errors as exc:
            raise _http_error(exc, deps) from exc
        if not created:
            response.status_code = status.HTTP_200_OK
        return CaseView.of(case, deps)

    @api.get(
        "/cases/{case_id}",
        response_model=CaseView,
        dependencies=[StaffOrService],
        responses={403: {"description": "unmasked=true from a role that may not unmask."}},
    )
    async def get_case(
        case_id: CaseId,
        request: Request,
        principal: Annotated[Principal, Depends(current_principal)],
        unmasked: Unmasked = False,
    ) -> CaseView:
        if unmasked and principal.role not in MAY_UNMASK:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "unmasked: only supervisors and admins")
        case = await deps.queries.get(case_id)
        if case is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"case_id: no case {case_id}")
        if unmasked:
            # Who, when, what, from where; append-only (no route changes the audit log).
            await deps.audit.record(
                actor=principal.subject,
                role=principal.role.value,
                action=UNMASKED_ACTION,
                subject=case_id,
                source=request.client.host if request.client else "",
                reason="case contact",
            )
        return CaseView.of(case, deps, unmasked=unmasked)

    @api.get(
        "/cases",
        response_model=CaseList,
        dependencies=[StaffOrService],
        summary="Cases, newest first, by customer, order, state and/or kind.",
    )
    async def list_cases(
        customer_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        order_id: Annotated[str | None, Query(pattern=ORDER_ID_PATTERN)] = None,
        state: CaseState | None = None,
        kind: CaseKind | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    ) -> CaseList:
        cases = await deps.queries.search(
            customer_id=customer_id,
            order_id=order_id,
            state=state.value if state else None,
            kind=kind.value if kind else None,
            limit=limit,
        )
        return CaseList(items=[CaseView.of(c, deps) for c in cases])

    @api.post(
        "/cases/{case_id}/completion",
        response_model=CaseView,
        dependencies=[Staff],
        summary="Complete a case an inquiry opened (order, lines, kind, reason); then reviewed.",
    )
    async def complete_case(
        case_id: CaseId,
        body: RequestBody,
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> CaseView:
        try:
            case = await handlers.complete_case(case_id, body.command(), deps, _ctx(principal))
        except errors as exc:
            raise _http_error(exc, deps) from exc
        return CaseView.of(case, deps)

    @api.post(
        "/cases/{case_id}/decision",
        response_model=CaseView,
        dependencies=[Managers],
        summary="A supervisor approves or rejects (a request waiting for one, or overruling the "
        "policy before the parcel arrives); audited.",
    )
    async def decide(
        case_id: CaseId,
        body: DecisionBody,
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> CaseView:
        try:
            case = await handlers.decide_as_supervisor(
                case_id, Verdict(body.verdict), body.reason, deps, _ctx(principal), body.command_id
            )
        except errors as exc:
            raise _http_error(exc, deps) from exc
        return CaseView.of(case, deps)

    @api.post(
        "/cases/{case_id}/return-parcel",
        response_model=CaseView,
        dependencies=[StaffOrService],
        summary="The customer sent the item back: carrier and tracking number.",
    )
    async def return_parcel(
        case_id: CaseId,
        body: ReturnParcelBody,
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> CaseView:
        try:
            case = await handlers.record_return_parcel(
                case_id, body.carrier, body.tracking_number, deps, _ctx(principal)
            )
        except errors as exc:
            raise _http_error(exc, deps) from exc
        return CaseView.of(case, deps)

    @api.post(
        "/cases/{case_id}/transitions",
        response_model=CaseView,
        dependencies=[StaffOrService],
        summary="Move the case one step (received, inspected, refunded, exchanged, repaired, "
        "rejected, closed); illegal steps are refused with 409 unless a supervisor overrides.",
    )
    async def move(
        case_id: CaseId,
        body: TransitionBody,
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> CaseView:
        if body.override_reason is not None and principal.role not in MANAGERS:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"override_reason: only a supervisor may override (you are "
                f"{principal.role.value})",
            )
        try:
            case = await handlers.move_case(
                case_id,
                body.to,
                body.details(),
                deps,
                _ctx(principal),
                override_reason=body.override_reason,
                command_id=body.command_id,
            )
        except errors as exc:
            raise _http_error(exc, deps) from exc
        return CaseView.of(case, deps)

    @api.post(
        "/cases/{case_id}/review-reply",
        response_model=CaseView,
        dependencies=[Staff],
        summary="Record the reply to a negative review and the explanation of its cause.",
    )
    async def review_reply(
        case_id: CaseId,
        body: ReviewReplyBody,
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> CaseView:
        try:
            case = await handlers.reply_to_review(
                case_id, body.reply, body.explanation, deps, _ctx(principal), body.command_id
            )
        except errors as exc:
            raise _http_error(exc, deps) from exc
        return CaseView.of(case, deps)

    @api.get(
        "/orders/{order_id}",
        response_model=OrderView,
        dependencies=[Staff],
        summary="The order as after-sales knows it (its projection of the commerce topic).",
    )
    async def get_order(order_id: Annotated[str, Path(pattern=ORDER_ID_PATTERN)]) -> OrderView:
        order = await handlers.find_order(order_id, deps)
        if order is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"order_id: unknown {order_id}")
        return OrderView(
            order_id=order.order_id,
            customer_id=order.customer_id,
            status=order.status,
            delivered_at=order.delivered_at,
            currency=order.currency,
            lines=[
                LineView(
                    sku=ln.sku,
                    quantity=ln.quantity,
                    category=ln.category,
                    unit_price_cents=ln.unit_price_cents,
                )
                for ln in order.lines
            ],
        )

    @api.get(
        "/audit",
        tags=["audit"],
        dependencies=[Managers],
        summary="The audit log (supervisor overrides, policy exceptions), newest first.",
    )
    async def get_audit(
        subject: Annotated[str | None, Query(max_length=200)] = None,
        action: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict[str, Any]]:
        """Append-only: no endpoint changes or deletes an entry."""
        found = await deps.audit.entries(subject=subject, action=action, limit=limit)
        return [{**asdict(e), "at": e.at.isoformat()} for e in found]

    return api
