"""``kefu-aftersales``: run the service (HTTP, consumers, outbox relay, timers) in one process."""

from __future__ import annotations

from kefu_shared.serve import serve

from kefu_aftersales.bootstrap import SERVICE, create_app
from kefu_aftersales.settings import AftersalesSettings


def main() -> None:
    serve(SERVICE, AftersalesSettings, create_app)


if __name__ == "__main__":
    main()
