"""Portable backup and restore of one service's database: every collection as Extended JSON.

Works the same on MongoDB and FerretDB (plain find/insert_many, no mongodump needed), keeps
types (dates, ids) through bson.json_util, and restores into an empty database only, so a
restore never mixes with live data. Usage (docs/security.md):

    uv run python -m tests.security.backup export mongodb://host:27017 kefu_orders out.json
    uv run python -m tests.security.backup import mongodb://host:27017 kefu_orders_restored out.json
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from bson import json_util
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

FORMAT = "kefu-backup/1"


async def export_database(db: AsyncDatabase[dict[str, Any]]) -> str:
    collections: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(await db.list_collection_names()):
        collections[name] = [doc async for doc in db[name].find({})]
    document = {"format": FORMAT, "database": db.name, "collections": collections}
    return json_util.dumps(document, json_options=json_util.CANONICAL_JSON_OPTIONS)


async def import_database(db: AsyncDatabase[dict[str, Any]], text: str) -> int:
    document = json_util.loads(text)
    if document.get("format") != FORMAT:
        raise ValueError(f"format: expected {FORMAT}, got {document.get('format')!r}")
    if await db.list_collection_names():
        raise ValueError(f"database {db.name} is not empty: restore into an empty one")
    restored = 0
    for name, docs in document["collections"].items():
        if docs:
            await db[name].insert_many(docs)
            restored += len(docs)
    return restored


async def _main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in ("export", "import"):
        print(__doc__, file=sys.stderr)
        return 2
    command, uri, database, path = argv
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        if command == "export":
            text = await export_database(client[database])
            await asyncio.to_thread(Path(path).write_text, text)
        else:
            text = await asyncio.to_thread(Path(path).read_text)
            count = await import_database(client[database], text)
            print(f"restored {count} documents into {database}")
    finally:
        await client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(_main(sys.argv[1:])))
