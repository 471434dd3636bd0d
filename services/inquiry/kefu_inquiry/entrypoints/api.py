"""HTTP: push-channel intake, the knowledge base, agents and their actions on inquiries."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, status
from kefu_shared.audit import AuditLog
from kefu_shared.auth import MANAGERS, STAFF, Role, current_principal, requires
from kefu_shared.contracts.inquiry import Category, Contact, CustomerMessage, Department
from kefu_shared.correlation import current_correlation_id
from kefu_shared.envelope import new_id
from kefu_shared.pii import mask_email, mask_phone
from kefu_shared.topics import Channel
from pydantic import BaseModel, Field

from kefu_inquiry import handlers
from kefu_inquiry.domain.inquiry import DomainError, Inquiry, Message
from kefu_inquiry.domain.knowledge import Article, ArticleDraft, QuickReply, QuickReplyDraft
from kefu_inquiry.domain.routing import Agent, Level
from kefu_inquiry.handlers import Context, Deps

Id = Annotated[str, Path(min_length=1, max_length=200)]

# Roles (DOMAIN.md 6, least privilege): the shop's systems post messages; agents work
# inquiries; supervisors and admins shape agents and the knowledge base.
INTAKE = [Depends(requires(Role.SERVICE, Role.ADMIN))]
READ = [Depends(requires(*STAFF, Role.SERVICE))]
WORK = [Depends(requires(*STAFF))]
MANAGE = [Depends(requires(*MANAGERS))]
REPLY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"


class Accepted(BaseModel):
    inquiry_id: str
    outcome: str


MAX_PAGE = 200
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Page size, at most {MAX_PAGE}.")]


class ContactView(BaseModel):
    phone: str | None = None
    email: str | None = None


class InquiryView(BaseModel):
    """An inquiry as agents see it: the contact is masked (DOMAIN.md 6, least privilege)."""

    id: str
    customer_id: str
    customer_name: str
    contact: ContactView
    channel: Channel
    channels: list[Channel]
    order_reference: str | None
    language: str
    category: Category | None
    confidence: float
    needs_human: bool
    status: str
    agent_id: str | None
    required_level: Level
    department: Department | None
    opened_at: datetime
    resolved_at: datetime | None
    first_response_at: datetime | None
    sla_next_at: datetime | None
    sla: list[dict[str, Any]]
    history: list[dict[str, Any]]
    messages: list[Message]

    @classmethod
    def of(cls, inquiry: Inquiry, *, unmasked: bool = False) -> InquiryView:
        contact = (
            ContactView(phone=inquiry.contact.phone, email=inquiry.contact.email)
            if unmasked
            else ContactView(
                phone=mask_phone(inquiry.contact.phone), email=mask_email(inquiry.contact.email)
            )
        )
        return cls(
            **inquiry.model_dump(
                include={
                    "id",
                    "customer_id",
                    "customer_name",
                    "channel",
                    "channels",
                    "order_reference",
                    "language",
                    "category",
                    "confidence",
                    "needs_human",
                    "status",
                    "agent_id",
                    "required_level",
                    "department",
                    "opened_at",
                    "resolved_at",
                    "first_response_at",
                    "sla_next_at",
                    "messages",
                }
            ),
            contact=contact,
            sla=[c.model_dump(mode="json") for c in inquiry.clocks],
            history=[h.model_dump(mode="json") for h in inquiry.history],
        )


class AgentBody(BaseModel):
    name: str = Field(default="", max_length=200)
    categories: list[Category] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=lambda: ["zh"], min_length=1)
    level: Level = Level.AGENT
    on_duty: bool = False
    capacity: int = Field(default=5, ge=0, le=100)


class ReplyBody(BaseModel):
    agent_id: str = Field(min_length=1)
    text: str | None = Field(default=None, min_length=1, max_length=4000)
    quick_reply_id: str | None = None
    reply_id: str | None = Field(
        default=None, pattern=REPLY_ID_PATTERN, description="Idempotency key of this reply."
    )


class TransferBody(BaseModel):
    agent_id: str = Field(min_length=1)
    to_agent_id: str = Field(min_length=1)
    reason: str = Field(default="", max_length=1000)


class EscalateBody(BaseModel):
    agent_id: str = Field(min_length=1)
    to: Literal["senior", "logistics", "finance", "quality"]
    reason: str = Field(default="", max_length=1000)


class ResolveBody(BaseModel):
    agent_id: str | None = None


class ReopenBody(BaseModel):
    agent_id: str | None = None
    reason: str = Field(default="", max_length=1000)


def _ctx() -> Context:
    return Context(correlation_id=current_correlation_id.get() or None)


def _http_error(exc: DomainError) -> HTTPException:
    code = status.HTTP_404_NOT_FOUND if exc.not_found else status.HTTP_409_CONFLICT
    return HTTPException(code, detail=str(exc))


def _field_error(field: str, message: str) -> HTTPException:
    return HTTPException(
        422,
        detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


def router(deps: Deps, audit: AuditLog) -> APIRouter:
    api = APIRouter()

    @api.post(
        "/messages", status_code=202, tags=["intake"], response_model=Accepted, dependencies=INTAKE
    )
    async def post_message(message: CustomerMessage) -> Accepted:
        """A customer message from a push channel (same contract as the inbound topics)."""
        if message.channel not in deps.channels:
            deps.metrics.rejected.labels(message.channel.value, "channel_not_served").inc()
            raise _field_error("channel", f"channel {message.channel.value!r} is not served here")
        received = await handlers.receive_message(message, deps, _ctx())
        return Accepted(inquiry_id=received.inquiry_id, outcome=received.outcome)

    @api.get("/inquiries/{inquiry_id}", tags=["inquiries"], dependencies=READ)
    async def get_inquiry(inquiry_id: Id, request: Request, unmasked: bool = False) -> InquiryView:
        """Contacts are masked; supervisors and admins may ask ``?unmasked=true`` (audited)."""
        principal = current_principal(request)
        if unmasked and principal.role not in MANAGERS:
            raise HTTPException(403, detail="unmasked: only supervisors and admins")
        inquiry = await deps.queries.get(inquiry_id)
        if inquiry is None:
            raise HTTPException(404, detail=f"no inquiry {inquiry_id}")
        if unmasked:
            await audit.record(
                actor=principal.subject,
                role=principal.role.value,
                action="pii.unmasked",
                subject=inquiry_id,
                source=request.client.host if request.client else "",
                reason="contact",
            )
        return InquiryView.of(inquiry, unmasked=unmasked)

    @api.get("/customers/{customer_id}/inquiries", tags=["inquiries"], dependencies=READ)
    async def customer_history(customer_id: Id, limit: Limit = 50) -> list[InquiryView]:
        """The history follows the customer, across channels; newest first."""
        return [InquiryView.of(i) for i in await deps.queries.of_customer(customer_id, limit)]

    async def act(coro: Any) -> InquiryView:
        try:
            inquiry: Inquiry = await coro
        except DomainError as exc:
            raise _http_error(exc) from exc
        return InquiryView.of(inquiry)

    @api.post("/inquiries/{inquiry_id}/replies", tags=["agents"], dependencies=WORK)
    async def post_reply(inquiry_id: Id, body: ReplyBody) -> InquiryView:
        if not body.text and not body.quick_reply_id:
            raise _field_error("text", "give text or quick_reply_id")
        return await act(
            handlers.reply(
                inquiry_id,
                body.agent_id,
                body.text,
                body.quick_reply_id,
                body.reply_id,
                deps,
                _ctx(),
            )
        )

    @api.post("/inquiries/{inquiry_id}/transfer", tags=["agents"], dependencies=WORK)
    async def post_transfer(inquiry_id: Id, body: TransferBody) -> InquiryView:
        return await act(
            handlers.transfer(
                inquiry_id, body.agent_id, body.to_agent_id, body.reason, deps, _ctx()
            )
        )

    @api.post("/inquiries/{inquiry_id}/escalate", tags=["agents"], dependencies=WORK)
    async def post_escalate(inquiry_id: Id, body: EscalateBody) -> InquiryView:
        department = None if body.to == "senior" else Department(body.to)
        return await act(
            handlers.escalate(inquiry_id, body.agent_id, department, body.reason, deps, _ctx())
        )

    @api.post("/inquiries/{inquiry_id}/resolve", tags=["agents"], dependencies=WORK)
    async def post_resolve(inquiry_id: Id, body: ResolveBody) -> InquiryView:
        return await act(handlers.resolve(inquiry_id, body.agent_id, deps, _ctx()))

    @api.post("/inquiries/{inquiry_id}/reopen", tags=["agents"], dependencies=WORK)
    async def post_reopen(inquiry_id: Id, body: ReopenBody) -> InquiryView:
        return await act(handlers.reopen(inquiry_id, body.agent_id, body.reason, deps, _ctx()))

    @api.put("/agents/{agent_id}", tags=["agents"], dependencies=MANAGE)
    async def put_agent(agent_id: Id, body: AgentBody, request: Request) -> Agent:
        """Create or update an agent; coming on duty (or more capacity) pulls from the queue."""
        before = await deps.agents.get(agent_id)
        agent = Agent(id=agent_id, **body.model_dump())
        await handlers.put_agent(agent, deps)
        if before is None or (before.level, before.categories, before.languages) != (
            agent.level,
            agent.categories,
            agent.languages,
        ):
            # Level and skills decide who sees which inquiries: a role-relevant change.
            principal = current_principal(request)
            await audit.record(
                actor=principal.subject,
                role=principal.role.value,
                action="agent.level_or_skills_changed",
                subject=agent_id,
                source=request.client.host if request.client else "",
                before=before.model_dump(mode="json") if before else None,
                after=agent.model_dump(mode="json"),
            )
        return agent

    @api.get("/audit", tags=["audit"], dependencies=MANAGE)
    async def get_audit(
        subject: str | None = None, action: str | None = None, limit: Limit = 100
    ) -> list[dict[str, Any]]:
        """The audit log, newest first (append-only: there is no endpoint that changes it)."""
        entries = await audit.entries(subject=subject, action=action, limit=limit)
        return [{**asdict(e), "at": e.at.isoformat()} for e in entries]

    @api.get("/agents/{agent_id}", tags=["agents"], dependencies=WORK)
    async def get_agent(agent_id: Id) -> Agent:
        agent = await deps.agents.get(agent_id)
        if agent is None:
            raise HTTPException(404, detail=f"no agent {agent_id}")
        return agent

    @api.get("/agents/{agent_id}/queue", tags=["agents"], dependencies=WORK)
    async def agent_queue(agent_id: Id, limit: Limit = 50) -> list[InquiryView]:
        """The inquiries the agent holds, most urgent SLA first."""
        if await deps.agents.get(agent_id) is None:
            raise HTTPException(404, detail=f"no agent {agent_id}")
        return [InquiryView.of(i) for i in (await deps.queries.of_agent(agent_id))[:limit]]

    # -- knowledge base and quick replies ---------------------------------------------------

    @api.post(
        "/knowledge-base/articles", status_code=201, tags=["knowledge base"], dependencies=MANAGE
    )
    async def create_article(draft: ArticleDraft) -> Article:
        article = Article(id=new_id(), **draft.model_dump())
        await deps.knowledge.put_article(article)
        return article

    @api.get("/knowledge-base/articles", tags=["knowledge base"], dependencies=WORK)
    async def list_articles(language: str | None = None, limit: Limit = 100) -> list[Article]:
        return (await deps.knowledge.articles(language))[:limit]

    @api.get("/knowledge-base/articles/{article_id}", tags=["knowledge base"], dependencies=WORK)
    async def get_article(article_id: Id) -> Article:
        article = await deps.knowledge.article(article_id)
        if article is None:
            raise HTTPException(404, detail=f"no article {article_id}")
        return article

    @api.put("/knowledge-base/articles/{article_id}", tags=["knowledge base"], dependencies=MANAGE)
    async def put_article(article_id: Id, draft: ArticleDraft) -> Article:
        article = Article(id=article_id, **draft.model_dump())
        await deps.knowledge.put_article(article)
        return article

    @api.delete(
        "/knowledge-base/articles/{article_id}",
        status_code=204,
        tags=["knowledge base"],
        dependencies=MANAGE,
    )
    async def delete_article(article_id: Id) -> None:
        if not await deps.knowledge.delete_article(article_id):
            raise HTTPException(404, detail=f"no article {article_id}")

    @api.post("/quick-replies", status_code=201, tags=["knowledge base"], dependencies=MANAGE)
    async def create_quick_reply(draft: QuickReplyDraft) -> QuickReply:
        reply = QuickReply(id=new_id(), **draft.model_dump())
        await deps.knowledge.put_quick_reply(reply)
        return reply

    @api.get("/quick-replies", tags=["knowledge base"], dependencies=WORK)
    async def list_quick_replies(limit: Limit = 100) -> list[QuickReply]:
        return (await deps.knowledge.quick_replies())[:limit]

    @api.get("/quick-replies/{reply_id}", tags=["knowledge base"], dependencies=WORK)
    async def get_quick_reply(reply_id: Id) -> QuickReply:
        reply = await deps.knowledge.quick_reply(reply_id)
        if reply is None:
            raise HTTPException(404, detail=f"no quick reply {reply_id}")
        return reply

    @api.put("/quick-replies/{reply_id}", tags=["knowledge base"], dependencies=MANAGE)
    async def put_quick_reply(reply_id: Id, draft: QuickReplyDraft) -> QuickReply:
        reply = QuickReply(id=reply_id, **draft.model_dump())
        await deps.knowledge.put_quick_reply(reply)
        return reply

    @api.delete(
        "/quick-replies/{reply_id}", status_code=204, tags=["knowledge base"], dependencies=MANAGE
    )
    async def delete_quick_reply(reply_id: Id) -> None:
        if not await deps.knowledge.delete_quick_reply(reply_id):
            raise HTTPException(404, detail=f"no quick reply {reply_id}")

    _ = (Body, Contact)  # re-exported types used in the OpenAPI schema
    return api
