"""Bounds on what one HTTP request may cost: its body size and its time waiting for the store.

A request is a person or a system waiting for an answer, so it gets a bounded wait: a store that
is away or stalled is a 503 with Retry-After within seconds, not a 500 or a connection held for
minutes. Consumers are not bounded this way: a message waits for the store as long as it takes
(the dead-letter middleware retries outages without limit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pymongo
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, PyMongoError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024
STORE_WAIT_SECONDS = 5.0
RETRY_AFTER_SECONDS = 5


class BodySizeLimit:
    """Refuse a body above ``max_bytes`` with 413 before it is read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(self.max_bytes, send)
            return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            # A chunked body declares no length: count it as it arrives, answer 413 once it is
            # too long and tell the app the client went away (it then stops reading).
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not refused:
                    refused = True
                    await _too_large(self.max_bytes, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # whatever the app answers after the refusal goes nowhere
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


async def _too_large(max_bytes: int, send: Send) -> None:
    response = JSONResponse(
        {"detail": f"request body larger than {max_bytes} bytes"}, status_code=413
    )
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def bound_store_waits(app: FastAPI, seconds: float = STORE_WAIT_SECONDS) -> None:
    """Every store call made while answering a request shares one deadline; a store that is
    away, stalled or too slow for it is answered 503 with Retry-After."""

    @app.middleware("http")
    async def store_deadline(request: Request, call_next):  # type: ignore[no-untyped-def]
        with pymongo.timeout(seconds):
            return await call_next(request)

    async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ConnectionFailure) or (isinstance(exc, PyMongoError) and exc.timeout):
            return JSONResponse(
                {"detail": "the store is unavailable or too slow; retry later"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        raise exc

    app.add_exception_handler(PyMongoError, store_unavailable)
