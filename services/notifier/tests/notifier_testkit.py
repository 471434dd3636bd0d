"""Real servers for the notifier's integration tests: SMTP (aiosmtpd) and HTTP providers."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from kefu_notifier.domain.signature import verify_signature
from kefu_shared.contracts.notifier import NotificationRequested
from kefu_shared.envelope import Envelope
from kefu_shared.testing import produce


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"


class SmtpServer:
    """A real SMTP server on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self._inbox = _Inbox()
        self._controller = Controller(self._inbox, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[EmailMessage]:
        return self._inbox.messages

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpProvider:
    """A real HTTP server: answers 503 ``fail_first`` times, then 200 (or what ``verify`` says)."""

    fail_first: int = 0
    verify: Callable[[ReceivedRequest], bool] | None = None
    requests: list[ReceivedRequest] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received = ReceivedRequest(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                provider.requests.append(received)
                if len(provider.requests) <= provider.fail_first:
                    status, reply = 503, {"error": "provider busy"}
                elif provider.verify is not None and not provider.verify(received):
                    status, reply = 401, {"error": "bad signature"}
                else:
                    status, reply = 200, {"message_id": f"p-{len(provider.requests)}"}
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/send"

    def __enter__(self) -> HttpProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def request(
    key: str,
    *,
    customer_id: str = "c-1",
    purpose: str = "shipping_notice",
    template: str | None = None,
    parameters: dict[str, Any] | None = None,
    language: str = "en",
    preferred_channel: str | None = "email",
    recipient: dict[str, str] | None = None,
) -> Envelope[Any]:
    data = NotificationRequested.model_validate(
        {
            "idempotency_key": key,
            "customer_id": customer_id,
            "purpose": purpose,
            "template": template or purpose,
            "parameters": parameters
            if parameters is not None
            else {"order_id": "O-42", "carrier": "SF Express", "tracking_number": "SF100200"},
            "language": language,
            "preferred_channel": preferred_channel,
            "recipient": recipient if recipient is not None else {"email": "li.lei@example.cn"},
            "requested_by": "orders",
        }
    )
    return Envelope.wrap(data, source="orders")


async def publish(bootstrap: str, topic: str, envelope: Envelope[Any], times: int = 1) -> None:
    await produce(
        bootstrap,
        topic,
        [envelope.kafka_body()] * times,
        key=envelope.subject.encode(),
        headers=envelope.kafka_headers(),
    )


@dataclass
class WebhookReceiver:
    """A real HTTP server receiving webhook deliveries, like a subscriber's would.

    It answers 503 to the first ``fail_first`` attempts of each delivery id, and to everything
    while ``failing`` is set; a request whose signature does not verify gets 401.
    """

    secret: str
    fail_first: int = 0
    failing: bool = False
    requests: list[ReceivedRequest] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received = ReceivedRequest(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                receiver.requests.append(received)
                seen = receiver.attempts_of(received.headers.get("x-kefu-delivery-id", ""))
                if receiver.failing or len(seen) <= receiver.fail_first:
                    status = 503
                elif not receiver.verified(received):
                    status = 401
                else:
                    status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/kefu-events"

    def verified(self, received: ReceivedRequest) -> bool:
        """What a subscriber does: the MAC over the raw body, and a fresh timestamp."""
        return verify_signature(
            self.secret,
            received.headers.get("x-kefu-timestamp", ""),
            received.body,
            received.headers.get("x-kefu-signature", ""),
            tolerance=300,
        )

    def attempts_of(self, delivery_id: str) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.headers.get("x-kefu-delivery-id") == delivery_id]

    def event_ids(self) -> list[str]:
        return [r.json()["id"] for r in self.requests]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def event(
    event_type: str,
    *,
    source: str = "inquiry",
    subject: str = "INQ-1",
    data: dict[str, Any] | None = None,
) -> Envelope[Any]:
    """A kefu event as its owning service publishes it (the fan-out reads only the envelope)."""
    return Envelope[Any](
        id=uuid.uuid4().hex,
        type=event_type,
        version=1,
        source=source,
        time=datetime.now(UTC),
        subject=subject,
        correlation_id=uuid.uuid4().hex,
        data=data if data is not None else {"subject": subject, "note": "已收到"},
    )
