"""The demo channel: records deliveries in memory and in the log, with no network at all.

Used for channels that have no provider configured when ``log_unconfigured_channels`` is on
(the default, so ``kefu-notifier`` runs locally out of the box). Never the default in production
configuration: see README.md.
"""

from __future__ import annotations

import logging

from kefu_notifier.domain.catalogue import ChannelKind
from kefu_notifier.domain.ports import OutgoingMessage, SendReceipt

log = logging.getLogger(__name__)


class LogSender:
    def __init__(self, channel: ChannelKind) -> None:
        self.channel = channel
        self.sent: list[OutgoingMessage] = []

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        self.sent.append(message)
        log.info(
            "notification %s via %s (log provider) to customer %s: %s",
            message.delivery_id,
            self.channel,
            message.customer_id,
            message.subject,
        )
        return SendReceipt(provider_message_id=f"log-{message.delivery_id}")
