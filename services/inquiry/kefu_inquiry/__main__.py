"""``kefu-inquiry``: run the service (HTTP, consumers, outbox relay, timers) in one process."""

from __future__ import annotations

import uvicorn
from kefu_shared.observability import configure_logging
from kefu_shared.settings import load_settings

from kefu_inquiry.bootstrap import SERVICE, create_app
from kefu_inquiry.settings import InquirySettings


def main() -> None:
    settings = load_settings(InquirySettings)
    configure_logging(SERVICE, settings.log_level)
    uvicorn.run(
        create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None
    )


if __name__ == "__main__":
    main()
