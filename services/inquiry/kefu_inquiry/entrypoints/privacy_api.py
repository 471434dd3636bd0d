"""HTTP: an administrator asks every service to erase one customer's personal data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from kefu_shared.auth import Principal, Role, requires
from kefu_shared.contracts.privacy import CustomerErasureRequested
from kefu_shared.correlation import current_correlation_id
from kefu_shared.documents import VersionedDocumentStore
from kefu_shared.envelope import new_id
from pydantic import BaseModel, Field

from kefu_inquiry import privacy
from kefu_inquiry.handlers import Context

ADMIN = requires(Role.ADMIN)
Admin = Annotated[Principal, Depends(ADMIN)]


class ErasureBody(BaseModel):
    customer_id: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=500)
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Idempotency key: asking twice with the same id publishes one request.",
    )


class ErasureAccepted(BaseModel):
    request_id: str
    customer_id: str
    published: bool


def router(
    store: VersionedDocumentStore, topic: Callable[[str], str], clock: Callable[[], datetime]
) -> APIRouter:
    api = APIRouter(tags=["privacy"])

    @api.post("/privacy/erasure-requests", status_code=202)
    async def post_erasure_request(body: ErasureBody, admin: Admin) -> ErasureAccepted:
        """Publish CustomerErasureRequested; every service erases and confirms on its own."""
        request = CustomerErasureRequested(
            request_id=body.request_id or new_id(),
            customer_id=body.customer_id,
            requested_by=admin.subject,
            requested_at=clock(),
            reason=body.reason,
        )
        ctx = Context(correlation_id=current_correlation_id.get())
        published = await privacy.request_erasure(request, store, topic, ctx)
        return ErasureAccepted(
            request_id=request.request_id, customer_id=request.customer_id, published=published
        )

    return api
