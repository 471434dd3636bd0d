"""Every service's app built offline (placeholder settings connect to nothing)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from kefu_shared.settings import ServiceSettings, settings_class_of

SERVICES = ("inquiry", "notifier", "orders", "aftersales", "feedback")
PLACEHOLDERS = {"kafka_bootstrap_servers": "kafka:9092", "mongodb_uri": "mongodb://mongo:27017"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def settings_class(service: str) -> type[ServiceSettings]:
    cls = settings_class_of(service)
    if cls is None:
        raise LookupError(service)
    return cls


def build(service: str, **overrides: Any) -> FastAPI:
    return build_with(service, {**PLACEHOLDERS, **overrides})


def build_with(service: str, values: dict[str, Any]) -> FastAPI:
    bootstrap = importlib.import_module(f"kefu_{service}.bootstrap")
    app: FastAPI = bootstrap.create_app(settings_class(service).model_validate(values))
    return app


def _roles_in(dependencies: list[Any]) -> set[str] | None:
    """Roles named by ``requires`` checks among ``dependencies`` (and what they depend on)."""
    found: set[str] | None = None
    stack = list(dependencies)
    while stack:
        dep = stack.pop()
        call = getattr(dep, "call", None) or getattr(dep, "dependency", None)
        roles = getattr(call, "kefu_roles", None)
        if roles is not None:
            found = (found or set()) | {str(r) for r in roles}
        stack.extend(getattr(dep, "dependencies", []) or [])
    return found


def _walk(items: list[Any], prefix: str, inherited: list[Any]) -> Iterator[Route]:
    for item in items:
        if isinstance(item, APIRoute):
            found = _roles_in([*inherited, *item.dependant.dependencies])
            roles = None if found is None else frozenset(found)
            for method in sorted(item.methods):
                yield Route(method, prefix + item.path, roles)
        elif hasattr(item, "original_router"):
            # FastAPI 0.16x includes routers lazily: walk the original, keep the include's deps.
            ctx = item.include_context
            yield from _walk(
                item.original_router.routes,
                prefix + ctx.prefix,
                [*inherited, *ctx.dependencies],
            )


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    roles: frozenset[str] | None  # None: no requires() at all


def routes(app: FastAPI) -> list[Route]:
    return list(_walk(app.routes, "", []))
