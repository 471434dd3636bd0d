"""The dispatch loop: a background task that attempts due deliveries.

Due times live in the delivery documents (``next_attempt_at``), not in memory, so retries and
deferrals survive restarts: a new process finds them on its first scan. New requests wake the
loop at once; otherwise it polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kefu_notifier.handlers import NotifierDeps, dispatch_due

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, deps: NotifierDeps, *, poll_seconds: float, batch_size: int) -> None:
        self._deps = deps
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                due = await dispatch_due(self._deps, limit=self._batch_size)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatch scan failed; retrying at the next poll")
                due = 0
            if due >= self._batch_size:
                continue  # a full batch: more may be due, scan again without waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)
