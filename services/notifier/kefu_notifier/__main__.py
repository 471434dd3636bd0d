"""``kefu-notifier``: run the notifier (consumer, dispatch loop, HTTP API) in one process."""

from __future__ import annotations

from kefu_shared.serve import serve

from kefu_notifier.bootstrap import SERVICE, create_app
from kefu_notifier.settings import NotifierSettings


def main() -> None:
    # serve() = load_settings(NotifierSettings) + JSON logs + uvicorn with graceful shutdown.
    serve(SERVICE, NotifierSettings, create_app)


if __name__ == "__main__":
    main()
