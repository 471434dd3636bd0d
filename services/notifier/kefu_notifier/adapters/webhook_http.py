"""Webhook deliveries over HTTP (httpx), and the SSRF guard that resolves target hosts.

Headers of every attempt (scheme in README.md, "Webhook subscriptions")::

    X-Kefu-Delivery-Id / Idempotency-Key   the same on every retry: deduplicate on it
    X-Kefu-Event-Id, X-Kefu-Event-Type, X-Kefu-Subscription-Id, X-Kefu-Attempt
    X-Kefu-Timestamp, X-Kefu-Signature     v1=HMAC-SHA256(secret, timestamp + "." + body)

Redirects are not followed: a 3xx is a failed attempt, so a public target cannot bounce the
notifier to an internal address.
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx

from kefu_notifier.domain.signature import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)
from kefu_notifier.domain.webhook_ports import WebhookAttemptFailed, WebhookRequest
from kefu_notifier.domain.webhook_targets import (
    Target,
    TargetRefused,
    check_addresses,
    parse_target,
)

EVENT_ID_HEADER = "X-Kefu-Event-Id"
EVENT_TYPE_HEADER = "X-Kefu-Event-Type"
SUBSCRIPTION_ID_HEADER = "X-Kefu-Subscription-Id"
ATTEMPT_HEADER = "X-Kefu-Attempt"
USER_AGENT = "kefu-notifier-webhooks/1"


def webhook_headers(request: WebhookRequest, timestamp: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        DELIVERY_ID_HEADER: request.delivery_id,
        "Idempotency-Key": request.delivery_id,
        EVENT_ID_HEADER: request.event_id,
        EVENT_TYPE_HEADER: request.event_type,
        SUBSCRIPTION_ID_HEADER: request.subscription_id,
        ATTEMPT_HEADER: str(request.attempt),
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(request.secret, timestamp, request.body),
    }


class HttpWebhookPoster:
    """One pooled client for every subscription; closed by the runtime's shutdown hook."""

    def __init__(
        self, *, timeout: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._client = httpx.AsyncClient(
            timeout=timeout, transport=transport, follow_redirects=False
        )

    async def post(self, request: WebhookRequest) -> int:
        # A fresh timestamp per attempt (receivers check freshness); the delivery id stays.
        headers = webhook_headers(request, str(int(time.time())))
        try:
            response = await self._client.post(request.url, content=request.body, headers=headers)
        except httpx.TimeoutException as exc:
            raise WebhookAttemptFailed(f"timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise WebhookAttemptFailed(f"unreachable: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return response.status_code
        raise WebhookAttemptFailed(
            f"HTTP {response.status_code}: {response.text[:200]}", status_code=response.status_code
        )

    async def aclose(self) -> None:
        await self._client.aclose()


class ResolvingTargetGuard:
    """Refuses targets that are not http(s) or whose host resolves to a non-public address.

    ``allow_private`` (KEFU_NOTIFIER_WEBHOOK_ALLOW_PRIVATE_TARGETS) keeps the URL checks and the
    "host must resolve" check but accepts any address: for tests and closed networks.
    """

    def __init__(self, *, allow_private: bool, resolve_timeout: float = 5.0) -> None:
        self._allow_private = allow_private
        self._timeout = resolve_timeout

    @property
    def enforcing(self) -> bool:
        return not self._allow_private

    async def check(self, url: str) -> Target:
        target = parse_target(url)
        addresses = await self._resolve(target)
        if self._allow_private:
            if not addresses:
                raise TargetRefused(f"host {target.host!r} does not resolve")
            return target
        check_addresses(target, addresses)
        return target

    async def _resolve(self, target: Target) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            return []
        return sorted({str(info[4][0]) for info in infos})
