"""Which templates exist, which purpose each belongs to, and which purposes are transactional."""

from __future__ import annotations

from kefu_shared.contracts.notifier import NotificationChannel, NotificationPurpose

Purpose = NotificationPurpose
ChannelKind = NotificationChannel

AFTERSALES_STATES = (
    "requested",
    "approved",
    "rejected",
    "awaiting_return_parcel",
    "received",
    "inspected",
    "refunded",
    "exchanged",
    "repaired",
    "closed",
)

TEMPLATE_PURPOSES: dict[str, Purpose] = {
    "inquiry_acknowledgement": Purpose.INQUIRY_ACKNOWLEDGEMENT,
    "inquiry_reply": Purpose.INQUIRY_REPLY,
    "bot_answer": Purpose.BOT_ANSWER,
    "payment_reminder": Purpose.PAYMENT_REMINDER,
    "shipping_notice": Purpose.SHIPPING_NOTICE,
    **{f"aftersales_{state}": Purpose.AFTERSALES_PROGRESS for state in AFTERSALES_STATES},
    "survey_invitation": Purpose.SURVEY_INVITATION,
    "verification_code": Purpose.VERIFICATION_CODE,
    "order_change_confirmation": Purpose.ORDER_CHANGE_CONFIRMATION,
}
"""Every template, by name. A request naming a template of another purpose is refused, so an
opt-out of a purpose cannot be dodged by picking a template."""

TRANSACTIONAL_PURPOSES: frozenset[Purpose] = frozenset(
    {Purpose.VERIFICATION_CODE, Purpose.ORDER_CHANGE_CONFIRMATION}
)
"""Notices the customer is waiting for right now because they just acted (a login code, the
confirmation of a change they made). They bypass opt-out, quiet hours and the rate limit: a code
that arrives eight hours late is useless, and suppressing a confirmation of a change the customer
made leaves them unsure it happened. They still count towards the rate-limit window."""

DEFAULT_CHANNEL_ORDER: tuple[ChannelKind, ...] = (
    ChannelKind.WECHAT,
    ChannelKind.APP_PUSH,
    ChannelKind.MARKETPLACE_IM,
    ChannelKind.EMAIL,
    ChannelKind.SMS,
)
"""Fallback order after the preferred channel: free and unobtrusive first, SMS (paid, intrusive)
last. The webhook is never a fallback: it reaches the shop's system, not the customer."""


def purpose_of(template: str) -> Purpose | None:
    return TEMPLATE_PURPOSES.get(template)
