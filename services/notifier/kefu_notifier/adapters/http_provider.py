"""SMS, WeChat, marketplace IM, app push and webhooks through HTTP providers (httpx).

Every HTTP channel speaks one JSON shape to its endpoint (a provider gateway or the shop's
webhook receiver) and carries ``X-Kefu-Delivery-Id``, the same on every retry, so receivers
can deduplicate. With a secret the request is signed (see ``domain/signature.py``).
"""

from __future__ import annotations

import json
import time

import httpx

from kefu_notifier.domain.catalogue import ChannelKind
from kefu_notifier.domain.ports import OutgoingMessage, ProviderError, SendReceipt
from kefu_notifier.domain.signature import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)

RETRYABLE_STATUS = frozenset({408, 425, 429})


class HttpProviderSender:
    def __init__(
        self,
        channel: ChannelKind,
        *,
        url: str,
        token: str = "",
        signing_secret: str = "",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.channel = channel
        self._url = url
        self._token = token
        self._secret = signing_secret
        self._timeout = timeout
        self._transport = transport

    def payload(self, message: OutgoingMessage) -> dict[str, str]:
        return {
            "delivery_id": message.delivery_id,
            "idempotency_key": message.idempotency_key,
            "channel": self.channel.value,
            "to": message.address,
            "customer_id": message.customer_id,
            "purpose": message.purpose.value,
            "language": message.language,
            "subject": message.subject,
            "body": message.body,
        }

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        body = json.dumps(self.payload(message), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            DELIVERY_ID_HEADER: message.delivery_id,
            "Idempotency-Key": message.delivery_id,
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._secret:
            # A fresh timestamp per attempt (the receiver checks freshness); the delivery id
            # stays the same, which is what receivers deduplicate on.
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport
            ) as client:
                response = await client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise ProviderError(f"{self.channel} provider timed out", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"{self.channel} provider unreachable: {exc!r}", retryable=True
            ) from exc
        if response.is_success:
            return SendReceipt(provider_message_id=_message_id(response))
        retryable = response.status_code >= 500 or response.status_code in RETRYABLE_STATUS
        raise ProviderError(
            f"{self.channel} provider answered {response.status_code}: {response.text[:200]}",
            retryable=retryable,
        )


def _message_id(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict):
        value = data.get("message_id") or data.get("id")
        return str(value) if value is not None else None
    return None
