"""Run one service process: settings from the environment, JSON logs, uvicorn until SIGTERM."""

from __future__ import annotations

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
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,  # keep our JSON logging
        # SIGTERM: stop accepting requests, then the lifespan stops consumers and the relay.
        timeout_graceful_shutdown=20,
        access_log=False,
    )
