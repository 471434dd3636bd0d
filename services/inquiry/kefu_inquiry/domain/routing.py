"""Agents, their skills and load, and the choice of who takes an inquiry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from kefu_shared.contracts.inquiry import Category
from pydantic import BaseModel, Field


class Level(StrEnum):
    AGENT = "agent"
    SENIOR = "senior"


class Agent(BaseModel):
    id: str
    name: str = ""
    categories: list[Category] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=lambda: ["zh"])
    level: Level = Level.AGENT
    on_duty: bool = False
    capacity: int = Field(default=5, ge=0, le=100)


class RoutingNeed(BaseModel):
    """What an inquiry needs from whoever takes it."""

    category: Category | None
    language: str
    level: Level = Level.AGENT
    triage: bool = False  # low-confidence classification: any agent speaking the language
    excluded: frozenset[str] = frozenset()


def can_take(agent: Agent, need: RoutingNeed, load: int) -> bool:
    if not agent.on_duty or load >= agent.capacity or agent.id in need.excluded:
        return False
    if need.level is Level.SENIOR and agent.level is not Level.SENIOR:
        return False
    if need.language not in agent.languages:
        return False
    return need.triage or need.category is None or need.category in agent.categories


def choose_agent(
    agents: Iterable[Agent], loads: Mapping[str, int], need: RoutingNeed
) -> Agent | None:
    """The least-loaded on-duty agent with the skill (by share of capacity, then count).

    Seniors are kept for escalations: an ordinary inquiry goes to a senior only when no agent
    with the skill is free.
    """
    candidates = [a for a in agents if can_take(a, need, loads.get(a.id, 0))]
    if not candidates:
        return None

    def rank(agent: Agent) -> tuple[int, float, int, str]:
        load = loads.get(agent.id, 0)
        senior_penalty = 1 if need.level is Level.AGENT and agent.level is Level.SENIOR else 0
        return (senior_penalty, load / max(agent.capacity, 1), load, agent.id)

    return min(candidates, key=rank)
