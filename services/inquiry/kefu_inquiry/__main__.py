"""``kefu-inquiry``: run the service (HTTP, consumers, outbox relay, timers) in one process."""

from __future__ import annotations

from kefu_shared.serve import serve

from kefu_inquiry.bootstrap import SERVICE, create_app
from kefu_inquiry.settings import InquirySettings


def main() -> None:
    serve(SERVICE, InquirySettings, create_app)


if __name__ == "__main__":
    main()
