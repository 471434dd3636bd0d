"""HTTP: KPIs and the report for supervisors, survey rounds, opt-outs, and the survey link.

Two routers. ``staff_router`` is for people and systems of the shop. ``public_router`` is the
target of the link in a customer's invitation: it is authorised by the link's HMAC token, not by
a staff login (the customer has none), so the composition root mounts it beside, not under, the
kernel's staff routes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse
from kefu_shared.auth import MANAGERS, STAFF, Role, requires
from kefu_shared.contracts.aftersales import CaseKind
from kefu_shared.contracts.feedback import MAX_COMMENT_CHARS, SURVEY_ID_PATTERN, Dimension
from kefu_shared.contracts.inquiry import Category
from kefu_shared.correlation import current_correlation_id
from kefu_shared.topics import Channel
from pydantic import BaseModel, ConfigDict, Field

from kefu_feedback import handlers
from kefu_feedback.adapters.report import kpi_document, render_html
from kefu_feedback.domain.kpis import KpiQuery
from kefu_feedback.domain.rounds import RoundConflict, SurveyRound
from kefu_feedback.domain.survey import (
    AlreadyAnswered,
    Answer,
    Survey,
    SurveyError,
    SurveyStatus,
    card_numbers_redacted,
)
from kefu_feedback.entrypoints.survey_page import survey_page
from kefu_feedback.handlers import Context, Deps, UnknownSurvey

MAX_PERIOD_DAYS = 400
# Who may call what: KPIs and rounds are the supervisors' (and BI systems'); any agent may read
# a survey or record a customer's wish not to be surveyed.
Managers = [Depends(requires(*MANAGERS, Role.SERVICE))]
StartRounds = [Depends(requires(*MANAGERS))]
Staff = [Depends(requires(*STAFF, Role.SERVICE))]
CATEGORIES = sorted({c.value for c in Category} | {k.value for k in CaseKind})
SurveyId = Annotated[str, Path(pattern=SURVEY_ID_PATTERN)]
CustomerId = Annotated[str, Path(min_length=1, max_length=200)]
RoundId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$")]


# --- KPIs ---------------------------------------------------------------------------------


def _invalid(field: str, message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own (the documented HTTPValidationError): a list naming the
    query parameter, so clients and schema checks read every 422 the same way."""
    return HTTPException(422, [{"type": "value_error", "loc": ["query", field], "msg": message}])


def _moment(value: str, field: str, deps: Deps) -> datetime:
    """An ISO date (midnight, shop time) or date-time (naive: shop time)."""
    try:
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), time(0, 0))
        else:
            moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _invalid(field, f"{field}: not an ISO date or date-time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=deps.calendar.timezone)
    return moment


def kpi_query(
    deps: Deps,
    start: str,
    end: str,
    channel: Channel | None,
    category: str | None,
    agent_id: str | None,
) -> KpiQuery:
    begin, finish = _moment(start, "from", deps), _moment(end, "to", deps)
    if finish <= begin:
        raise _invalid("to", "to: must be after from")
    if finish - begin > timedelta(days=MAX_PERIOD_DAYS):
        raise _invalid("to", f"to: a period is at most {MAX_PERIOD_DAYS} days")
    if category is not None and category not in CATEGORIES:
        raise _invalid("category", f"category: unknown {category!r}; known: {CATEGORIES}")
    return KpiQuery(
        begin,
        finish,
        channel=channel.value if channel else None,
        category=category,
        agent_id=agent_id,
    )


From = Annotated[str, Query(alias="from", description="ISO date or date-time (shop time).")]
To = Annotated[str, Query(alias="to", description="Exclusive end; ISO date or date-time.")]
AgentFilter = Annotated[str | None, Query(min_length=1, max_length=200)]


async def _kpis(deps: Deps, q: KpiQuery) -> dict[str, Any]:
    report = await handlers.compute_kpis(q, deps)
    return kpi_document(
        report,
        timezone=str(deps.calendar.timezone),
        baseline_percent=deps.policy.kpis.conversion_baseline_percent,
    )


# --- surveys ------------------------------------------------------------------------------


class AnswerBody(BaseModel):
    """A customer's answer through the survey link."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=128, description="The link's token.")
    overall: int = Field(ge=1, le=5, description="1 very dissatisfied .. 5 very satisfied.")
    ratings: dict[Dimension, Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=dict)
    comment: str = Field(default="", max_length=MAX_COMMENT_CHARS)


class CustomerSurveyView(BaseModel):
    """What the customer's page needs: no agent, no other customer data."""

    survey_id: str
    state: Literal["open", "answered", "closed"]
    language: str
    dimensions: list[Dimension]
    scale: dict[int, str]
    overall: int | None = None


SCALE = {
    1: "very dissatisfied",
    2: "dissatisfied",
    3: "neutral",
    4: "satisfied",
    5: "very satisfied",
}


def _customer_view(s: Survey) -> CustomerSurveyView:
    state: Literal["open", "answered", "closed"] = (
        "answered"
        if s.status is SurveyStatus.ANSWERED
        else "closed"
        if s.status is SurveyStatus.SKIPPED
        else "open"
    )
    return CustomerSurveyView(
        survey_id=s.survey_id,
        state=state,
        language=s.language,
        dimensions=list(Dimension),
        scale=SCALE,
        overall=s.answer.overall if s.answer else None,
    )


def _survey_record(s: Survey) -> dict[str, Any]:
    return json.loads(s.model_dump_json())  # type: ignore[no-any-return]


class OptOutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    opted_out: bool


class RoundBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$", examples=["2026-Q2"])
    sample_size: int = Field(ge=1, le=100_000)
    lookback_days: int = Field(default=90, ge=1, le=366)


def _round_view(r: SurveyRound) -> dict[str, Any]:
    data = r.model_dump(mode="json", exclude={"sampled", "pending"})
    return {**data, "sampled": len(r.sampled), "pending": len(r.pending)}


def staff_router(deps: Deps) -> APIRouter:
    router = APIRouter(tags=["feedback"])

    @router.get(
        "/kpis",
        summary="Every KPI of a period, optionally for a channel/category/agent.",
        dependencies=Managers,
    )
    async def get_kpis(
        start: From,
        end: To,
        channel: Channel | None = None,
        category: Annotated[str | None, Query(description=f"One of {CATEGORIES}")] = None,
        agent_id: AgentFilter = None,
    ) -> dict[str, Any]:
        return await _kpis(deps, kpi_query(deps, start, end, channel, category, agent_id))

    @router.get(
        "/report",
        response_class=HTMLResponse,
        summary="The supervisor's report of a period as one HTML page with its charts.",
        dependencies=Managers,
    )
    async def get_report(
        start: From,
        end: To,
        channel: Channel | None = None,
        category: str | None = None,
        agent_id: AgentFilter = None,
    ) -> HTMLResponse:
        doc = await _kpis(deps, kpi_query(deps, start, end, channel, category, agent_id))
        return HTMLResponse(render_html(doc))

    @router.get(
        "/surveys/{survey_id}/record",
        summary="One survey as staff see it: status, reason, delivery, answer, follow-up.",
        responses={404: {"description": "No such survey."}},
        dependencies=Staff,
    )
    async def get_survey_record(survey_id: SurveyId) -> dict[str, Any]:
        survey = await handlers.load_survey(survey_id, deps)
        if survey is None:
            raise HTTPException(404, f"survey_id: no survey {survey_id!r}")
        return _survey_record(survey)

    @router.get("/customers/{customer_id}/survey-preference", dependencies=Staff)
    async def get_preference(customer_id: CustomerId) -> dict[str, Any]:
        c = await handlers.get_customer(customer_id, deps)
        return {
            "customer_id": customer_id,
            "opted_out": c.opted_out,
            "last_invited_at": c.last_invited_at,
        }

    @router.put(
        "/customers/{customer_id}/survey-preference",
        summary="Opt a customer out of (or back into) satisfaction surveys.",
        dependencies=Staff,
    )
    async def put_preference(customer_id: CustomerId, body: OptOutBody) -> dict[str, Any]:
        c = await handlers.set_opt_out(customer_id, body.opted_out, deps)
        return {
            "customer_id": customer_id,
            "opted_out": c.opted_out,
            "last_invited_at": c.last_invited_at,
        }

    @router.post(
        "/survey-rounds",
        status_code=status.HTTP_201_CREATED,
        summary="Start a survey round over a sample of the customers served lately.",
        responses={409: {"description": "The round exists with other parameters."}},
        dependencies=StartRounds,
    )
    async def post_round(body: RoundBody) -> dict[str, Any]:
        ctx = Context(correlation_id=current_correlation_id.get(None))
        try:
            r = await handlers.start_round(
                body.round_id, body.sample_size, body.lookback_days, ctx, deps
            )
        except RoundConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        assert r is not None  # only the scheduler's rounds are skipped when empty
        return _round_view(r)

    @router.get(
        "/survey-rounds/{round_id}",
        responses={404: {"description": "No such round."}},
        dependencies=Managers,
    )
    async def get_round(round_id: RoundId) -> dict[str, Any]:
        r = await handlers.get_round(round_id, deps)
        if r is None:
            raise HTTPException(404, f"round_id: no round {round_id!r}")
        return _round_view(r)

    return router


def public_router(deps: Deps) -> APIRouter:
    router = APIRouter(tags=["survey link"])

    async def _checked(survey_id: str, token: str) -> Survey:
        # Same answer for a wrong token and an unknown survey: ids are not to be probed.
        if not deps.links.verify(survey_id, token):
            raise HTTPException(403, "token: not valid for this survey")
        survey = await handlers.load_survey(survey_id, deps)
        if survey is None:
            raise HTTPException(404, f"survey_id: no survey {survey_id!r}")
        return survey

    @router.get(
        "/surveys/{survey_id}",
        summary="The link's target: the survey form (HTML) or its state (JSON).",
        responses={403: {"description": "Wrong token."}, 404: {"description": "No survey."}},
    )
    async def get_survey(
        request: Request,
        survey_id: SurveyId,
        token: Annotated[str, Query(min_length=1, max_length=128)],
    ) -> Any:
        view = _customer_view(await _checked(survey_id, token))
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(survey_page(view.model_dump(mode="json"), token))
        return view

    @router.post(
        "/surveys/{survey_id}/answers",
        summary="Answer a survey (once). The same answer again is accepted and changes nothing.",
        responses={
            201: {"description": "Recorded."},
            200: {"description": "This answer was recorded before."},
            403: {"description": "Wrong token."},
            404: {"description": "No such survey."},
            409: {"description": "Answered already, differently; or never sent."},
        },
    )
    async def post_answer(
        survey_id: SurveyId,
        body: Annotated[AnswerBody, Body()],
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> JSONResponse:
        before = await _checked(survey_id, body.token)
        answer = Answer(
            overall=body.overall,
            ratings=dict(body.ratings),
            comment=card_numbers_redacted(body.comment.strip()),
            source="link",
            answered_at=deps.clock(),
        )
        submission = (
            idempotency_key
            or "link:"
            + hashlib.sha256(
                json.dumps(
                    [
                        survey_id,
                        body.overall,
                        sorted((d.value, r) for d, r in body.ratings.items()),
                        answer.comment,
                    ]
                ).encode()
            ).hexdigest()[:32]
        )
        try:
            after = await handlers.answer_survey(survey_id, answer, submission, deps)
        except AlreadyAnswered as exc:
            raise HTTPException(409, str(exc)) from exc
        except UnknownSurvey as exc:
            raise HTTPException(404, str(exc)) from exc
        except SurveyError as exc:
            raise HTTPException(409, str(exc)) from exc
        code = 200 if before.answer is not None else 201
        return JSONResponse(_customer_view(after).model_dump(mode="json"), status_code=code)

    return router
