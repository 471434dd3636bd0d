"""A request's cost is bounded: its body size and its wait for the store."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from kefu_shared.http_limits import BodySizeLimit, bound_store_waits
from kefu_shared.mongo import make_client
from pydantic import BaseModel

LIMIT = 1024


class Note(BaseModel):
    text: str


def _app(mongodb_uri: str, *, store_wait: float = 0.5) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodySizeLimit, max_bytes=LIMIT)
    bound_store_waits(app, store_wait)
    client = make_client(mongodb_uri, app_name="limits-test", timeout_ms=30_000)

    @app.post("/notes")
    async def post_note(note: Note) -> dict[str, Any]:
        return {"length": len(note.text)}

    @app.get("/notes/{note_id}")
    async def get_note(note_id: str) -> dict[str, Any]:
        found = await client["limits"]["notes"].find_one({"_id": note_id})
        return {"found": found is not None}

    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu")


async def test_a_body_within_the_limit_is_read(mongodb_uri: str) -> None:
    async with _client(_app(mongodb_uri)) as http:
        r = await http.post("/notes", json={"text": "x" * 100})
    assert r.status_code == 200
    assert r.json() == {"length": 100}


async def test_a_body_above_the_limit_is_refused_with_413(mongodb_uri: str) -> None:
    async with _client(_app(mongodb_uri)) as http:
        r = await http.post("/notes", json={"text": "x" * (LIMIT * 4)})
    assert r.status_code == 413
    assert str(LIMIT) in r.json()["detail"]


async def test_a_chunked_body_above_the_limit_is_refused_with_413(mongodb_uri: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}'

    async with _client(_app(mongodb_uri)) as http:
        r = await http.post(
            "/notes", content=chunks(), headers={"content-type": "application/json"}
        )
    assert r.status_code == 413


async def test_a_request_reaches_the_store_when_it_answers(mongodb_uri: str) -> None:
    async with _client(_app(mongodb_uri)) as http:
        r = await http.get("/notes/n-1")
    assert r.status_code == 200
    assert r.json() == {"found": False}


async def test_a_request_while_the_store_is_away_is_a_503_with_retry_after() -> None:
    app = _app(f"mongodb://127.0.0.1:{_closed_port()}/?directConnection=true")
    async with _client(app) as http:
        started = time.monotonic()
        r = await http.get("/notes/n-1")
    assert r.status_code == 503
    assert r.headers["Retry-After"]
    assert time.monotonic() - started < 5  # the bound, not the client's 30 s selection timeout


async def test_a_request_to_a_stalled_store_is_a_503_within_the_bound() -> None:
    # A server that accepts connections and never answers: a hung disk, a SIGSTOPped process.
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        app = _app(f"mongodb://127.0.0.1:{port}/?directConnection=true")
        async with _client(app) as http:
            started = time.monotonic()
            r = await http.get("/notes/n-1")
        assert r.status_code == 503
        assert time.monotonic() - started < 5
    finally:
        for writer in held:
            writer.close()
        server.close()


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
