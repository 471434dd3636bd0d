"""Every Kafka topic name kefu uses, in one place.

Naming: ``kefu.<owner>.<what>``. Inbound topics are written by systems outside kefu (channel
adapters, the commerce platform, the marketplace); event topics are written only by their owning
service; each service has one dead-letter topic.
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """Where a customer reaches the shop (DOMAIN.md section 1)."""

    CHAT = "chat"
    PHONE = "phone"
    EMAIL = "email"
    SOCIAL = "social"
    MARKETPLACE = "marketplace"


def inbound_channel_topic(channel: Channel | str) -> str:
    """Raw customer messages of one channel, published by that channel's adapter."""
    return f"kefu.inquiry.inbound.{Channel(channel).value}"


INQUIRY_EVENTS = "kefu.inquiry.events"
NOTIFICATION_REQUESTS = "kefu.notifier.requests"
NOTIFIER_EVENTS = "kefu.notifier.events"
COMMERCE_ORDERS = "kefu.commerce.orders"
ORDERS_EVENTS = "kefu.orders.events"
AFTERSALES_EVENTS = "kefu.aftersales.events"
MARKETPLACE_REVIEWS = "kefu.marketplace.reviews"
FEEDBACK_EVENTS = "kefu.feedback.events"
SURVEY_ANSWERS = "kefu.feedback.answers"
PRIVACY_REQUESTS = "kefu.privacy.requests"
PRIVACY_EVENTS = "kefu.privacy.events"


EVENTS_TOPIC_OF_SERVICE = {
    "inquiry": INQUIRY_EVENTS,
    "notifier": NOTIFIER_EVENTS,
    "orders": ORDERS_EVENTS,
    "aftersales": AFTERSALES_EVENTS,
    "feedback": FEEDBACK_EVENTS,
}
"""The one topic each service publishes its events on."""


def dead_letter_topic(service: str) -> str:
    """Messages the service could not process, with the reason in headers."""
    return f"kefu.{service}.dlq"


ALL_INBOUND_CHANNEL_TOPICS = tuple(inbound_channel_topic(c) for c in Channel)
