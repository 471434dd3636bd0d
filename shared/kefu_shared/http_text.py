"""Refuse NUL characters in a request (path, query or JSON body) with 422 naming where.

A MongoDB-compatible store may not hold them: PostgreSQL's jsonb, under FerretDB, rejects
``\\u0000`` in any string, so a text field with one was a 500 from the store. No customer
message, address or article needs one, so the edge refuses it like any other invalid field.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from fastapi.responses import JSONResponse

from kefu_shared.http_limits import ASGIApp, Message, Receive, Scope, Send

NUL = "\x00"
MESSAGE = "NUL characters (\\u0000) are not accepted"


def nul_locations(value: Any, where: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    """Where strings (keys included) hold a NUL in a parsed JSON value."""
    if isinstance(value, str):
        if NUL in value:
            yield where
    elif isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                yield (*where, key)
            yield from nul_locations(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from nul_locations(item, (*where, index))


class RefuseNulCharacters:
    """422 for a NUL in the path, a query parameter or a string of the JSON body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found: list[tuple[str | int, ...]] = []
        if NUL in scope["path"]:  # already percent-decoded: %00 arrives as NUL
            found.append(("path",))
        query = scope.get("query_string", b"").decode("latin-1")
        for name, value in parse_qsl(query, keep_blank_values=True):
            if NUL in name or NUL in value:
                found.append(("query", name.replace(NUL, "\\u0000")))
        body, more = b"", True
        chunks: list[Message] = []
        while more:  # bounded: BodySizeLimit sits outside and stops at 1 MiB
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
        if b"\\u0000" in body:
            with contextlib.suppress(ValueError):  # not JSON: the app's validation answers
                found.extend(nul_locations(json.loads(body), ("body",)))
        if found:
            detail = [
                {"type": "value_error", "loc": list(loc), "msg": MESSAGE, "input": None}
                for loc in found
            ]
            await JSONResponse({"detail": detail}, status_code=422)(scope, receive, send)
            return
        replay = iter(chunks)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)
