"""The timer loop: a background task that fires due payment reminders, lost checks and expiries.

Due times live in the order documents (``next_due_at``), not in memory, so a restart loses
nothing: the next process finds them on its first scan.
"""

from __future__ import annotations

import asyncio
import logging

from kefu_orders.handlers import Deps, fire_due_timers

log = logging.getLogger(__name__)


async def run_timers(deps: Deps, *, every_seconds: float) -> None:
    while True:
        try:
            await fire_due_timers(deps)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A store blip must not stop the timers: the next scan fires what is due.
            log.exception("timer scan failed; retrying in %.1fs", every_seconds)
        await asyncio.sleep(every_seconds)
