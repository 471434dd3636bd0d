"""Background loops that attempt what is due: notification deliveries and webhook deliveries.

Due times live in the documents (``next_attempt_at``), not in memory, so retries and deferrals
survive restarts: a new process finds them on its first scan. New work wakes a loop at once;
otherwise it polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from kefu_notifier.handlers import NotifierDeps, dispatch_due
from kefu_notifier.webhook_handlers import WebhookDeps, dispatch_due_webhooks

log = logging.getLogger(__name__)

Scan = Callable[[int], Awaitable[int]]
"""Attempt up to ``limit`` due items; return how many were due."""


class PollingLoop:
    def __init__(self, scan: Scan, *, poll_seconds: float, batch_size: int, what: str) -> None:
        self._scan = scan
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._what = what
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                due = await self._scan(self._batch_size)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s scan failed; retrying at the next poll", self._what)
                due = 0
            if due >= self._batch_size:
                continue  # a full batch: more may be due, scan again without waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)


class Dispatcher(PollingLoop):
    """Attempts due notification deliveries."""

    def __init__(self, deps: NotifierDeps, *, poll_seconds: float, batch_size: int) -> None:
        async def scan(limit: int) -> int:
            return await dispatch_due(deps, limit=limit)

        super().__init__(scan, poll_seconds=poll_seconds, batch_size=batch_size, what="dispatch")


class WebhookDispatcher(PollingLoop):
    """Attempts due webhook deliveries of active subscriptions."""

    def __init__(self, deps: WebhookDeps, *, poll_seconds: float, batch_size: int) -> None:
        async def scan(limit: int) -> int:
            return await dispatch_due_webhooks(deps, limit=limit)

        super().__init__(
            scan, poll_seconds=poll_seconds, batch_size=batch_size, what="webhook dispatch"
        )
