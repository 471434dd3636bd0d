"""``kefu-orders``: run the service (HTTP, consumers, outbox relay, timers) in one process."""

from __future__ import annotations

from kefu_shared.serve import serve

from kefu_orders.bootstrap import SERVICE, create_app
from kefu_orders.settings import OrdersSettings


def main() -> None:
    serve(SERVICE, OrdersSettings, create_app)


if __name__ == "__main__":
    main()
