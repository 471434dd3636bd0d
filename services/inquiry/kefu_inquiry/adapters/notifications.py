"""Notices of the domain as the notifier's ``NotificationRequested`` contract."""

from __future__ import annotations

import re
from typing import Any

from kefu_shared.contracts.notifier import (
    NotificationChannel,
    NotificationLanguage,
    NotificationPurpose,
    NotificationRecipient,
    NotificationRequested,
)
from kefu_shared.topics import Channel
from pydantic import ValidationError

from kefu_inquiry.domain.inquiry import Inquiry, Notice

# Where the customer is most likely to read the answer: back on the channel they wrote from.
# The chat widget has no push of its own, so the app push stands in for it.
PREFERRED_CHANNEL = {
    Channel.CHAT: NotificationChannel.APP_PUSH,
    Channel.PHONE: NotificationChannel.SMS,
    Channel.EMAIL: NotificationChannel.EMAIL,
    Channel.SOCIAL: NotificationChannel.WECHAT,
    Channel.MARKETPLACE: NotificationChannel.MARKETPLACE_IM,
}


def _recipient(inquiry: Inquiry) -> NotificationRecipient:
    fields: dict[str, Any] = {}
    if inquiry.contact.email:
        fields["email"] = inquiry.contact.email.strip()
    if inquiry.contact.phone:
        fields["phone"] = re.sub(r"[\s()-]", "", inquiry.contact.phone)
    # An address the notifier would refuse is left out rather than failing the whole request:
    # the notifier then falls back to another channel, which is better than no answer at all.
    out: dict[str, Any] = {}
    for name, value in fields.items():
        try:
            NotificationRecipient(**{name: value})
        except ValidationError:
            continue
        out[name] = value
    return NotificationRecipient(**out)


def notification_request(inquiry: Inquiry, notice: Notice) -> NotificationRequested:
    language = NotificationLanguage.ZH_CN if inquiry.language == "zh" else NotificationLanguage.EN
    channel = inquiry.channels[-1] if inquiry.channels else inquiry.channel
    return NotificationRequested(
        idempotency_key=notice.idempotency_key,
        customer_id=inquiry.customer_id,
        purpose=NotificationPurpose(notice.purpose),
        template=notice.template,
        parameters=dict(notice.parameters),
        preferred_channel=PREFERRED_CHANNEL[channel],
        language=language,
        recipient=_recipient(inquiry),
        requested_by="inquiry",
    )
