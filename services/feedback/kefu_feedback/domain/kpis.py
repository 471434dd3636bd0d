"""The handbooks' indicators, computed from facts and surveys: pure functions, no storage.

Every KPI is a function of the *set* of facts (see facts.py), so duplicates (refused at insert)
and arrival order cannot change it. Percentiles are exact, by the nearest-rank method on the
stored values of the period: a ``$group`` on FerretDB has only ``$sum``/``$count``, and
histogram buckets would only give an interval, not the value a supervisor checks by hand.

Definitions (DOMAIN.md section 4; README.md has the full list):
- response times: first response = the inquiry's first human reply (``response_seconds`` runs
  from the oldest unanswered customer message); next response = every later reply; resolution
  = opening to an agent's resolution (bot answers are reported apart, they take no time).
  "Business" figures count only the seconds inside the shop's opening hours.
- SLA hit rate per target: clocks that stopped without a breach / clocks that stopped or
  breached. A breach belongs to the reply (resolution) whose waiting interval contains its due
  time; a breach with no such stop is a missed clock of its own.
- first-contact resolution (FCR): of the inquiries whose first resolution (by an agent) falls
  in the period, those with exactly one agent reply before it and no reopening within
  ``reopen_window_days`` after it. Reopen rate: of all first resolutions (bot ones included),
  those reopened within the window.
- CSAT: share of answers rating 4-5, overall and per dimension (of those who rated it);
  response rate = answered / invitations of the period not known to be undeliverable.
- conversion = deals / customers served, per agent: served = distinct customers an agent
  replied to in the period, not counting after-sales contacts or adverts (a customer served by
  A and closed by B is in A's served: A replied); deals = orders attributed to the agent in the
  period, less those refunded or whose attribution was revoked (whenever that became known).
- score = (conversion % - 55) x 0.5 - 0.5 x lost orders (the liquor shop's sheet; as data).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kefu_feedback.domain.calendar import BusinessCalendar
from kefu_feedback.domain.facts import Fact, FactKind
from kefu_feedback.domain.policy import KpiPolicy

SLA_KINDS = ("first_response", "next_response", "resolution")
DIMENSIONS = (
    "product_quality",
    "service_efficiency",
    "price",
    "user_experience",
    "after_sales_service",
)
DISTRIBUTION_BOUNDS = (30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 8 * 3600, 86400, 2 * 86400)
"""Upper bounds (seconds) of the response-time distribution shown in the report."""


@dataclass(frozen=True)
class KpiQuery:
    """The slice a supervisor asks for: ``[start, end)`` and optional filters."""

    start: datetime
    end: datetime
    channel: str | None = None
    category: str | None = None
    agent_id: str | None = None

    def in_period(self, at: datetime | None) -> bool:
        return at is not None and self.start <= at < self.end

    def agent_matches(self, agent_id: str | None) -> bool:
        return self.agent_id is None or agent_id == self.agent_id


@dataclass(frozen=True)
class SurveyRecord:
    """What the KPIs need of one survey."""

    survey_id: str
    kind: str
    agent_id: str | None
    channel: str | None
    category: str | None
    invited: bool
    undeliverable: bool
    case_at: datetime
    answered_at: datetime | None = None
    overall: int | None = None
    ratings: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Stats:
    count: int
    mean: float | None
    p50: float | None
    p90: float | None


@dataclass(frozen=True)
class TimeKpi:
    clock: Stats
    business: Stats
    distribution: list[tuple[float | None, int]]
    """(upper bound in seconds, count); the last bound None = longer."""


@dataclass(frozen=True)
class Rate:
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None


@dataclass(frozen=True)
class SlaKpi:
    sla: str
    clocks: int
    missed: int

    @property
    def hit_rate(self) -> float | None:
        return (self.clocks - self.missed) / self.clocks if self.clocks else None


@dataclass(frozen=True)
class AgentScore:
    agent_id: str
    served: int
    deals: int
    conversion: float | None
    conversion_points: float
    lost_orders: int
    lost_order_points: float
    score: float
    replies: int
    csat: Rate


@dataclass(frozen=True)
class KbMiss:
    question: str
    category: str
    count: int


@dataclass(frozen=True)
class KpiReport:
    query: KpiQuery
    inquiries_opened: int
    customer_messages: int
    spam_filtered: int
    resolved_by_agent: int
    resolved_by_bot: int
    first_response: TimeKpi
    next_response: TimeKpi
    resolution: TimeKpi
    sla: list[SlaKpi]
    first_contact_resolution: Rate
    reopen: Rate
    csat: Rate
    csat_by_dimension: dict[str, Rate]
    average_rating: float | None
    survey_response: Rate
    conversion: Rate
    agents: list[AgentScore]
    lost_orders: int
    peak_hours: list[list[int]]
    """7 x 24 customer messages: [weekday 0 = Monday][local hour]."""
    top_categories: list[tuple[str, int]]
    kb_misses: list[KbMiss]
    bot_answer: Rate
    reopen_window_days: float
    provisional_after: datetime
    """Resolutions after this moment may still be reopened within the window: FCR may drop."""


# --- statistics ---------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p % of values at or below."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def stats(values: Iterable[float]) -> Stats:
    ordered = sorted(values)
    if not ordered:
        return Stats(0, None, None, None)
    return Stats(
        count=len(ordered),
        mean=sum(ordered) / len(ordered),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
    )


def distribution(values: Iterable[float]) -> list[tuple[float | None, int]]:
    counts = [0] * (len(DISTRIBUTION_BOUNDS) + 1)
    for v in values:
        index = next((i for i, b in enumerate(DISTRIBUTION_BOUNDS) if v <= b), -1)
        counts[index] += 1
    bounds: list[float | None] = [float(b) for b in DISTRIBUTION_BOUNDS]
    return list(zip([*bounds, None], counts, strict=True))


def _time_kpi(pairs: list[tuple[float, float]]) -> TimeKpi:
    clock = [c for c, _ in pairs]
    return TimeKpi(stats(clock), stats(b for _, b in pairs), distribution(clock))


# --- per-inquiry timelines ----------------------------------------------------------------


@dataclass
class Timeline:
    """Everything known about one inquiry, whatever order the facts arrived in."""

    inquiry_id: str
    customer_id: str | None = None
    channel: str | None = None
    category: str | None = None
    opened: Fact | None = None
    auto_answered: bool = False
    messages: list[Fact] = field(default_factory=list)
    replies: list[Fact] = field(default_factory=list)
    resolutions: list[Fact] = field(default_factory=list)
    reopens: list[Fact] = field(default_factory=list)
    breaches: list[Fact] = field(default_factory=list)

    def add(self, fact: Fact) -> None:
        self.customer_id = self.customer_id or fact.customer_id
        if fact.kind is not FactKind.MESSAGE:  # a message's channel is where it came from
            self.channel = self.channel or fact.channel
        if fact.kind is FactKind.CLASSIFIED or (self.category is None and fact.category):
            self.category = fact.category or self.category
        if fact.kind is FactKind.OPENED:
            self.opened = fact
            self.channel = fact.channel
        elif fact.kind is FactKind.AUTO_ANSWERED:
            self.auto_answered = True
        elif fact.kind is FactKind.MESSAGE:
            self.messages.append(fact)
        elif fact.kind is FactKind.REPLY:
            self.replies.append(fact)
        elif fact.kind is FactKind.RESOLVED:
            self.resolutions.append(fact)
        elif fact.kind is FactKind.REOPENED:
            self.reopens.append(fact)
        elif fact.kind is FactKind.SLA_BREACHED:
            self.breaches.append(fact)

    def sort(self) -> None:
        for items in (self.messages, self.replies, self.resolutions, self.reopens, self.breaches):
            items.sort(key=lambda f: (f.at, f.id))


def timelines(facts: Iterable[Fact]) -> dict[str, Timeline]:
    out: dict[str, Timeline] = {}
    for fact in facts:
        if fact.inquiry_id is None or fact.kind is FactKind.SPAM:
            continue
        out.setdefault(fact.inquiry_id, Timeline(fact.inquiry_id)).add(fact)
    for timeline in out.values():
        timeline.sort()
    return out


def _in_scope(t: Timeline, q: KpiQuery) -> bool:
    if q.channel is not None and t.channel != q.channel:
        return False
    return q.category is None or t.category == q.category


# --- the KPIs -----------------------------------------------------------------------------


def _response_times(
    ts: Iterable[Timeline], q: KpiQuery, cal: BusinessCalendar, *, first: bool
) -> TimeKpi:
    pairs = []
    for t in ts:
        for r in t.replies:
            if bool(r.first) is first and q.in_period(r.at) and q.agent_matches(r.agent_id):
                seconds = r.seconds or 0.0
                began = r.at - timedelta(seconds=seconds)
                pairs.append((seconds, cal.business_seconds(began, r.at)))
    return _time_kpi(pairs)


def _resolution_times(ts: Iterable[Timeline], q: KpiQuery, cal: BusinessCalendar) -> TimeKpi:
    pairs = []
    for t in ts:
        for r in t.resolutions:
            if r.by_bot or not q.in_period(r.at) or not q.agent_matches(r.agent_id):
                continue
            seconds = r.seconds or 0.0
            began = r.started_at or (r.at - timedelta(seconds=seconds))
            pairs.append((seconds, cal.business_seconds(began, r.at)))
    return _time_kpi(pairs)


@dataclass(frozen=True)
class _Clock:
    stopped_at: datetime
    agent_id: str | None
    missed: bool


def _sla_clocks(t: Timeline) -> dict[str, list[_Clock]]:
    by_kind: dict[str, list[Fact]] = defaultdict(list)
    for b in t.breaches:
        by_kind[b.sla or ""].append(b)
    clocks: dict[str, list[_Clock]] = {k: [] for k in SLA_KINDS}

    # First response: one clock per inquiry, stopped by the first reply (or only breached).
    fr_breaches = by_kind["first_response"]
    first = next((r for r in t.replies if r.first), None)
    if first is not None:
        clocks["first_response"].append(_Clock(first.at, first.agent_id, bool(fr_breaches)))
    elif fr_breaches:
        b = fr_breaches[0]
        clocks["first_response"].append(_Clock(b.at, b.agent_id, True))

    # Next response: each later reply stops the clock that started when the customer wrote.
    matched: set[str] = set()
    for r in t.replies:
        if r.first:
            continue
        began = r.at - timedelta(seconds=r.seconds or 0.0)
        hits = [
            b
            for b in by_kind["next_response"]
            if b.due_at is not None and began <= b.due_at <= r.at
        ]
        matched.update(b.id for b in hits)
        clocks["next_response"].append(_Clock(r.at, r.agent_id, bool(hits)))
    for b in by_kind["next_response"]:
        if b.id not in matched:
            clocks["next_response"].append(_Clock(b.at, b.agent_id, True))

    # Resolution: a clock runs from the opening (or the last reopening) to each resolution.
    matched.clear()
    previous: datetime | None = None
    for r in t.resolutions:
        hits = [
            b
            for b in by_kind["resolution"]
            if b.due_at is not None
            and (previous is None or b.due_at > previous)
            and b.due_at <= r.at
        ]
        matched.update(b.id for b in hits)
        previous = r.at
        if not r.by_bot:
            clocks["resolution"].append(_Clock(r.at, r.agent_id, bool(hits)))
    for b in by_kind["resolution"]:
        if b.id not in matched:
            clocks["resolution"].append(_Clock(b.at, b.agent_id, True))
    return clocks


def _sla(ts: Iterable[Timeline], q: KpiQuery) -> list[SlaKpi]:
    totals = {k: [0, 0] for k in SLA_KINDS}
    for t in ts:
        for kind, clocks in _sla_clocks(t).items():
            for c in clocks:
                if q.in_period(c.stopped_at) and q.agent_matches(c.agent_id):
                    totals[kind][0] += 1
                    totals[kind][1] += int(c.missed)
    return [SlaKpi(k, clocks, missed) for k, (clocks, missed) in totals.items()]


def _fcr_and_reopen(ts: Iterable[Timeline], q: KpiQuery, window: timedelta) -> tuple[Rate, Rate]:
    fcr_num = fcr_den = reopen_num = reopen_den = 0
    for t in ts:
        if not t.resolutions:
            continue
        first = t.resolutions[0]
        if not q.in_period(first.at) or not q.agent_matches(first.agent_id):
            continue
        reopened = any(first.at < o.at <= first.at + window for o in t.reopens)
        reopen_den += 1
        reopen_num += int(reopened)
        if first.by_bot:
            continue
        replies = sum(1 for r in t.replies if r.at <= first.at)
        fcr_den += 1
        fcr_num += int(replies == 1 and not reopened)
    return Rate(fcr_num, fcr_den), Rate(reopen_num, reopen_den)


def _survey_in_scope(s: SurveyRecord, q: KpiQuery) -> bool:
    if q.channel is not None and s.channel != q.channel:
        return False
    if q.category is not None and s.category != q.category:
        return False
    return q.agent_matches(s.agent_id)


def _csat(
    surveys: Sequence[SurveyRecord], q: KpiQuery, satisfied: int
) -> tuple[Rate, dict[str, Rate], float | None, Rate]:
    answered = [
        s
        for s in surveys
        if s.overall is not None and q.in_period(s.answered_at) and _survey_in_scope(s, q)
    ]
    overall = Rate(sum(1 for s in answered if (s.overall or 0) >= satisfied), len(answered))
    by_dimension = {}
    for d in DIMENSIONS:
        rated = [s.ratings[d] for s in answered if d in s.ratings]
        by_dimension[d] = Rate(sum(1 for r in rated if r >= satisfied), len(rated))
    average = sum(s.overall or 0 for s in answered) / len(answered) if answered else None
    invited = [
        s
        for s in surveys
        if s.invited
        and q.in_period(s.case_at)
        and _survey_in_scope(s, q)
        and (not s.undeliverable or s.overall is not None)
    ]
    response = Rate(sum(1 for s in invited if s.overall is not None), len(invited))
    return overall, by_dimension, average, response


def _scorecards(
    ts: Iterable[Timeline],
    order_facts: Sequence[Fact],
    surveys: Sequence[SurveyRecord],
    q: KpiQuery,
    policy: KpiPolicy,
) -> tuple[list[AgentScore], Rate, int]:
    served: dict[str, set[str]] = defaultdict(set)
    replies: Counter[str] = Counter()
    for t in ts:
        for r in t.replies:
            if not q.in_period(r.at) or r.agent_id is None or not q.agent_matches(r.agent_id):
                continue
            replies[r.agent_id] += 1
            if t.category not in policy.not_served_categories and t.customer_id is not None:
                served[r.agent_id].add(t.customer_id)
    cancelled = {f.order_id for f in order_facts if f.kind is FactKind.DEAL_CANCELLED}
    recovered = {f.order_id for f in order_facts if f.kind is FactKind.LOSS_RECOVERED}
    latest: dict[str, Fact] = {}
    for f in order_facts:
        if f.kind is FactKind.DEAL and f.order_id is not None:
            known = latest.get(f.order_id)
            if known is None or (f.revision or 0) > (known.revision or 0):
                latest[f.order_id] = f
    deals: Counter[str] = Counter()
    for order_id, f in latest.items():
        if order_id in cancelled or f.agent_id is None:
            continue
        if q.in_period(f.at) and q.agent_matches(f.agent_id):
            deals[f.agent_id] += 1
    lost: Counter[str] = Counter()
    for f in order_facts:
        if f.kind is not FactKind.LOST_ORDER or f.order_id in recovered or f.agent_id is None:
            continue
        if q.in_period(f.at) and q.agent_matches(f.agent_id):
            lost[f.agent_id] += 1
    csat: dict[str, list[int]] = defaultdict(list)
    for s in surveys:
        answered = s.overall is not None and q.in_period(s.answered_at)
        if s.agent_id and s.overall is not None and answered and _survey_in_scope(s, q):
            csat[s.agent_id].append(s.overall)
    agents = sorted(set(served) | set(replies) | set(deals) | set(lost))
    scores = []
    for a in agents:
        n_served, n_deals = len(served.get(a, ())), deals.get(a, 0)
        conversion = n_deals / n_served if n_served else None
        points = (
            round(
                (conversion * 100 - policy.conversion_baseline_percent)
                * policy.points_per_percentage_point,
                2,
            )
            if conversion is not None
            else 0.0
        )
        lost_points = round(lost.get(a, 0) * policy.points_per_lost_order, 2)
        ratings = csat.get(a, [])
        scores.append(
            AgentScore(
                agent_id=a,
                served=n_served,
                deals=n_deals,
                conversion=conversion,
                conversion_points=points,
                lost_orders=lost.get(a, 0),
                lost_order_points=lost_points,
                score=round(points + lost_points, 2),
                replies=replies.get(a, 0),
                csat=Rate(
                    sum(1 for r in ratings if r >= policy.satisfied_min_rating), len(ratings)
                ),
            )
        )
    team = Rate(sum(deals.values()), sum(len(v) for v in served.values()))
    return scores, team, sum(lost.values())


def _peak_hours(ts: Iterable[Timeline], q: KpiQuery, cal: BusinessCalendar) -> list[list[int]]:
    grid = [[0] * 24 for _ in range(7)]
    for t in ts:
        if q.category is not None and t.category != q.category:
            continue
        for m in t.messages:
            if not q.in_period(m.at) or (q.channel is not None and m.channel != q.channel):
                continue
            if not q.agent_matches(m.agent_id):
                continue
            local = cal.local(m.at)
            grid[local.weekday()][local.hour] += 1
    return grid


_NOISE = re.compile(r"[\d\s]+")


def normalise_question(text: str) -> str:
    """The same question asked twice maps to one key: case, digits, punctuation and spacing
    removed (order numbers and amounts vary, the question does not)."""
    kept = "".join(ch for ch in text.lower() if not unicodedata.category(ch).startswith(("P", "S")))
    return _NOISE.sub(" ", kept).strip()[:80]


def _frequent(
    ts: Sequence[Timeline], q: KpiQuery, top_n: int
) -> tuple[list[tuple[str, int]], list[KbMiss], Rate]:
    categories: Counter[str] = Counter()
    misses: Counter[str] = Counter()
    example: dict[str, str] = {}
    miss_category: dict[str, Counter[str]] = defaultdict(Counter)
    opened = answered = 0
    # Oldest first, so the example shown for a question is its first asking (stable).
    for t in sorted(ts, key=lambda t: (t.opened.at, t.inquiry_id) if t.opened else (q.end, "")):
        if t.opened is None or not q.in_period(t.opened.at) or not _in_scope(t, q):
            continue
        category = t.category or "unclassified"
        categories[category] += 1
        opened += 1
        if t.auto_answered:
            answered += 1
            continue
        key = normalise_question(t.opened.text or "")
        if not key:
            continue
        misses[key] += 1
        example.setdefault(key, (t.opened.text or "").strip())
        miss_category[key][category] += 1
    top_categories = sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]
    top_misses = [
        KbMiss(example[k], miss_category[k].most_common(1)[0][0], n)
        for k, n in sorted(misses.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]
    ]
    return top_categories, top_misses, Rate(answered, opened)


def compute(
    q: KpiQuery,
    facts: Iterable[Fact],
    surveys: Sequence[SurveyRecord],
    calendar: BusinessCalendar,
    policy: KpiPolicy,
    now: datetime,
) -> KpiReport:
    """Every indicator for one slice. ``facts`` must hold the period's facts and, for the
    inquiries and orders they mention, their other facts (replies before the period, reopenings
    after it, refunds): see the store's ``facts_for``."""
    all_facts = list(facts)
    by_inquiry = timelines(all_facts)
    scoped = [t for t in by_inquiry.values() if _in_scope(t, q)]
    order_facts = [
        f
        for f in all_facts
        if f.kind
        in (FactKind.DEAL, FactKind.DEAL_CANCELLED, FactKind.LOST_ORDER, FactKind.LOSS_RECOVERED)
    ]
    window = timedelta(days=policy.reopen_window_days)
    fcr, reopen = _fcr_and_reopen(scoped, q, window)
    csat, by_dimension, average, response = _csat(surveys, q, policy.satisfied_min_rating)
    agents, team, lost = _scorecards(scoped, order_facts, surveys, q, policy)
    top_categories, kb_misses, bot = _frequent(list(by_inquiry.values()), q, policy.top_n)
    grid = _peak_hours(by_inquiry.values(), q, calendar)
    spam = sum(
        1
        for f in all_facts
        if f.kind is FactKind.SPAM
        and q.in_period(f.at)
        and (q.channel is None or f.channel == q.channel)
    )
    return KpiReport(
        query=q,
        inquiries_opened=sum(1 for t in scoped if t.opened and q.in_period(t.opened.at)),
        customer_messages=sum(sum(row) for row in grid),
        spam_filtered=spam,
        resolved_by_agent=sum(
            1
            for t in scoped
            for r in t.resolutions
            if not r.by_bot and q.in_period(r.at) and q.agent_matches(r.agent_id)
        ),
        resolved_by_bot=sum(
            1
            for t in scoped
            for r in t.resolutions
            if r.by_bot and q.in_period(r.at) and q.agent_id is None
        ),
        first_response=_response_times(scoped, q, calendar, first=True),
        next_response=_response_times(scoped, q, calendar, first=False),
        resolution=_resolution_times(scoped, q, calendar),
        sla=_sla(scoped, q),
        first_contact_resolution=fcr,
        reopen=reopen,
        csat=csat,
        csat_by_dimension=by_dimension,
        average_rating=average,
        survey_response=response,
        conversion=team,
        agents=agents,
        lost_orders=lost,
        peak_hours=grid,
        top_categories=top_categories,
        kb_misses=kb_misses,
        bot_answer=bot,
        reopen_window_days=policy.reopen_window_days,
        provisional_after=now - window,
    )
