"""Run one service process: settings from the environment, JSON logs, uvicorn until SIGTERM."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from kefu_shared.observability import configure_logging
from kefu_shared.settings import ServiceSettings, load_settings

S = TypeVar("S", bound=ServiceSettings)


def serve(service: str, settings_cls: type[S], create_app: Callable[[S], FastAPI]) -> None:
    settings = load_settings(settings_cls)
    configure_logging(service, settings.log_level)
    app = create_app(settings)
    freeze_startup_objects()
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,  # keep our JSON logging
        # uvloop where it is installed (a dependency off Windows): a few per cent less of the
        # services' own CPU per journey than asyncio's loop (README, Benchmark, session 7).
        loop="auto",
        # SIGTERM: stop accepting requests, then the lifespan stops consumers and the relay.
        timeout_graceful_shutdown=20,
        access_log=False,
    )


def freeze_startup_objects() -> None:
    """Keep what importing and building the app made (modules, classes, pydantic validators,
    routes: ~110k objects) out of the cyclic garbage collector's full collections.

    Measured in the benchmark's service processes (``bench --quick``, a ``gc.callbacks`` probe):
    a full collection under load took 73-135 ms, mostly walking those objects, and stalled every
    message in flight: a p99 made of GC pauses. After the freeze: 6-28 ms. They live as long as
    the process anyway, so nothing that could be collected is kept.
    """
    gc.collect()
    gc.freeze()
