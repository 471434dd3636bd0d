"""The notifier's published language: the request other services send, the events it emits.

Requests travel on ``topics.NOTIFICATION_REQUESTS`` wrapped in an ``Envelope``; their subject
(and Kafka key) is the **customer id**, so one customer's notifications are handled in order by
one consumer, which is what makes the per-customer rate limit safe without atomic updates.
Events travel on ``topics.NOTIFIER_EVENTS``; their subject is the **idempotency key**, i.e. the
delivery, so the deferred/sent/failed events of one delivery stay in order on one partition.

Within v1 changes are additive only; consumers ignore fields they do not know.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from kefu_shared import topics
from kefu_shared.envelope import EventData

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"
"""Printable, no slash or space: the key is also a URL path segment (``/deliveries/{key}``)."""


class NotificationPurpose(StrEnum):
    """Why the customer is told something (DOMAIN.md section 5). Opt-outs are per purpose."""

    INQUIRY_ACKNOWLEDGEMENT = "inquiry_acknowledgement"
    INQUIRY_REPLY = "inquiry_reply"
    BOT_ANSWER = "bot_answer"
    PAYMENT_REMINDER = "payment_reminder"
    SHIPPING_NOTICE = "shipping_notice"
    AFTERSALES_PROGRESS = "aftersales_progress"
    SURVEY_INVITATION = "survey_invitation"
    VERIFICATION_CODE = "verification_code"
    ORDER_CHANGE_CONFIRMATION = "order_change_confirmation"


class NotificationChannel(StrEnum):
    """How a notice reaches the customer (or, for ``webhook``, the shop's own system)."""

    EMAIL = "email"
    SMS = "sms"
    WECHAT = "wechat"
    MARKETPLACE_IM = "marketplace_im"
    APP_PUSH = "app_push"
    WEBHOOK = "webhook"


class NotificationLanguage(StrEnum):
    ZH_CN = "zh-CN"
    EN = "en"


class NotificationRecipient(BaseModel):
    """The customer's addresses; only the ones the chosen channel needs must be present."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    phone: str | None = Field(
        default=None, pattern=r"^\+?[0-9]{5,20}$", description="For SMS; E.164 preferred."
    )
    wechat_openid: str | None = Field(default=None, min_length=1, max_length=128)
    marketplace_im_id: str | None = Field(default=None, min_length=1, max_length=128)
    app_push_token: str | None = Field(default=None, min_length=1, max_length=4096)


class NotificationRequested(EventData):
    """A service asks the notifier to tell a customer something (consumed, not emitted).

    Published by any kefu service on ``kefu.notifier.requests``. The notifier sends it at most
    once per ``idempotency_key`` (see services/notifier/README.md for the exact guarantee).
    """

    event_type: ClassVar[str] = "notification.requested"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = topics.NOTIFICATION_REQUESTS
    subject_field: ClassVar[str] = "customer_id"

    idempotency_key: str = Field(
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Chosen by the requester, e.g. 'aftersales:case-9:approved'. The same key "
        "is never sent twice, whatever the envelope id.",
    )
    customer_id: str = Field(min_length=1, max_length=128)
    purpose: NotificationPurpose
    template: str = Field(
        min_length=1,
        max_length=64,
        description="Template name, e.g. 'shipping_notice' or 'aftersales_refunded'; it must "
        "belong to the purpose.",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Values the template needs; a missing one fails."
    )
    preferred_channel: NotificationChannel | None = Field(
        default=None, description="Tried first; otherwise the notifier's default order."
    )
    language: NotificationLanguage = NotificationLanguage.ZH_CN
    recipient: NotificationRecipient = Field(default_factory=NotificationRecipient)
    requested_by: str = Field(min_length=1, max_length=64, description="Requesting service.")


class _DeliveryEvent(EventData):
    topic: ClassVar[str] = topics.NOTIFIER_EVENTS
    subject_field: ClassVar[str] = "idempotency_key"

    idempotency_key: str = Field(description="The request's key; also the envelope subject.")
    delivery_id: str = Field(
        description="Stable id of this delivery, sent to providers as X-Kefu-Delivery-Id."
    )
    customer_id: str
    purpose: NotificationPurpose
    template: str
    requested_by: str = Field(description="The service that asked for the notification.")


class NotificationSent(_DeliveryEvent):
    """Emitted once per delivery, when a provider accepted the notice."""

    event_type: ClassVar[str] = "notification.sent"
    event_version: ClassVar[int] = 1

    channel: NotificationChannel = Field(description="The channel that carried it.")
    attempts: int = Field(ge=1, description="Provider calls it took, this one included.")
    sent_at: datetime
    provider_message_id: str | None = Field(
        default=None, description="The provider's id for the message, when it returns one."
    )


class NotificationFailureReason(StrEnum):
    INVALID_TEMPLATE = "invalid_template"
    """Unknown template, a template of another purpose, or a missing parameter."""
    NO_REACHABLE_CHANNEL = "no_reachable_channel"
    """No address for any configured channel."""
    PROVIDER_REJECTED = "provider_rejected"
    """The provider refused the message permanently (e.g. invalid number)."""
    RETRIES_EXHAUSTED = "retries_exhausted"
    """Temporary provider errors or timeouts on every attempt up to the cap."""


class NotificationFailed(_DeliveryEvent):
    """Emitted once per delivery when it will never be sent (the notifier's DLQ-style record)."""

    event_type: ClassVar[str] = "notification.failed"
    event_version: ClassVar[int] = 1

    reason: NotificationFailureReason
    detail: str = Field(description="Human-readable reason, e.g. the provider's error.")
    channel: NotificationChannel | None = Field(
        default=None, description="The channel last tried; None if none was usable."
    )
    attempts: int = Field(ge=0, description="Provider calls made.")
    failed_at: datetime


class NotificationDeferralReason(StrEnum):
    QUIET_HOURS = "quiet_hours"
    """An intrusive channel (SMS) inside the shop's quiet hours."""
    RATE_LIMIT = "rate_limit"
    """The customer already got the maximum number of notices in the window."""


class NotificationDeferred(_DeliveryEvent):
    """Emitted each time a delivery is held back by a policy; it is sent later, not dropped.

    Provider retries are not deferrals: they show in the delivery log (status ``pending``).
    """

    event_type: ClassVar[str] = "notification.deferred"
    event_version: ClassVar[int] = 1

    reason: NotificationDeferralReason
    channel: NotificationChannel = Field(description="The channel it will be sent on.")
    deferred_until: datetime = Field(description="Earliest time of the next attempt (UTC).")


class NotificationSuppressionReason(StrEnum):
    OPTED_OUT_PURPOSE = "opted_out_purpose"
    OPTED_OUT_CHANNEL = "opted_out_channel"
    """Every channel the customer could be reached on is opted out."""


class NotificationSuppressed(_DeliveryEvent):
    """Emitted once when the customer's preferences forbid the notice: recorded, never sent."""

    event_type: ClassVar[str] = "notification.suppressed"
    event_version: ClassVar[int] = 1

    reason: NotificationSuppressionReason
    suppressed_at: datetime


# --- webhook subscriptions ----------------------------------------------------------------
# Systems that do not speak Kafka subscribe over HTTP (services/notifier/README.md, "Webhook
# subscriptions"); the notifier POSTs them the kefu events they chose, signed. These events are
# about the subscriptions themselves, on ``kefu.notifier.events``, subject = subscription id.


class WebhookSubscriptionDisabledReason(StrEnum):
    CONSECUTIVE_FAILURES = "consecutive_failures"
    """Every delivery attempt failed for too long: at least the configured number of
    consecutive failed attempts, spread over at least the configured time."""


class WebhookSubscriptionDisabled(EventData):
    """Emitted once each time the notifier switches a webhook subscription off by itself.

    From then on no new event is recorded for it and nothing is POSTed to it; deliveries still
    pending stay in its log. ``POST /webhooks/{id}/resume`` switches it on again (and sends those
    pending deliveries). A subscription paused or deleted by its owner emits nothing.
    """

    event_type: ClassVar[str] = "webhook.subscription_disabled"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = topics.NOTIFIER_EVENTS
    subject_field: ClassVar[str] = "subscription_id"

    subscription_id: str = Field(description="The subscription's id; also the envelope subject.")
    target_host: str = Field(
        description="Host of the target URL (path and query left out: they may hold tokens)."
    )
    reason: WebhookSubscriptionDisabledReason
    detail: str = Field(description="The last delivery error, e.g. 'HTTP 503' or a timeout.")
    consecutive_failures: int = Field(ge=1, description="Failed attempts in a row, no success.")
    failing_since: datetime = Field(description="When the first of those failures happened.")
    last_delivery_id: str = Field(
        description="The delivery whose failure switched it off (X-Kefu-Delivery-Id)."
    )
    disabled_at: datetime
