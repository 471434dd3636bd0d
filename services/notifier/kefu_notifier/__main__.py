"""``kefu-notifier``: run the notifier (consumer, dispatch loop, HTTP API) in one process."""

from __future__ import annotations

import uvicorn
from kefu_shared.observability import configure_logging
from kefu_shared.settings import load_settings

from kefu_notifier.bootstrap import SERVICE, create_app
from kefu_notifier.settings import NotifierSettings


def main() -> None:
    settings = load_settings(NotifierSettings)
    configure_logging(SERVICE, settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,  # keep the JSON logging configured above
    )


if __name__ == "__main__":
    main()
