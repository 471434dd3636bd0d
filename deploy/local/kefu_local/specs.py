"""Generated documents: the event catalogue, JSON Schemas and each service's AsyncAPI 3.0.

``kefu contracts export`` writes them under ``docs/``; tests regenerate them in memory and fail
when the committed copies are stale, so the documents other systems read never drift.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from typing import Any

import httpx
from kefu_shared.catalogue import export_schemas, render_catalogue
from kefu_shared.settings import settings_class_of

SERVICES = ("inquiry", "notifier", "orders", "aftersales", "feedback")
# Placeholders: building an app connects to nothing, and the documents name no real host.
PLACEHOLDERS = {"kafka_bootstrap_servers": "kafka:9092", "mongodb_uri": "mongodb://mongo:27017"}


def asyncapi_document(service: str) -> dict[str, Any] | None:
    cls = settings_class_of(service)
    if cls is None:
        return None
    try:
        bootstrap = importlib.import_module(f"kefu_{service}.bootstrap")
    except ModuleNotFoundError:
        return None
    app = bootstrap.create_app(cls.model_validate(PLACEHOLDERS))

    async def fetch() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://spec") as client:
            response = await client.get("/asyncapi.json")
            response.raise_for_status()
            document: dict[str, Any] = response.json()
            return document

    return asyncio.run(fetch())


def asyncapi_documents() -> dict[str, str]:
    documents = {}
    for service in SERVICES:
        document = asyncapi_document(service)
        if document is not None:
            # Sorted keys: subscribers registered from a set must not reorder the file.
            text = json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True)
            documents[service] = text + "\n"
    return documents


def export_all(docs: Path) -> list[Path]:
    written = export_schemas(docs / "events" / "schemas")
    catalogue = docs / "events.md"
    catalogue.write_text(render_catalogue())
    written.append(catalogue)
    asyncapi_dir = docs / "asyncapi"
    asyncapi_dir.mkdir(parents=True, exist_ok=True)
    for service, text in asyncapi_documents().items():
        path = asyncapi_dir / f"{service}.json"
        path.write_text(text)
        written.append(path)
    return written
