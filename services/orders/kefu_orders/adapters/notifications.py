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
from kefu_shared.contracts.orders import SalesChannel
from pydantic import ValidationError

from kefu_orders.domain.notes import EN
from kefu_orders.domain.order import Notice, Order

# Where the customer bought is where they look for news of the order.
PREFERRED_CHANNEL = {
    SalesChannel.WEB: NotificationChannel.EMAIL,
    SalesChannel.APP: NotificationChannel.APP_PUSH,
    SalesChannel.WECHAT: NotificationChannel.WECHAT,
    SalesChannel.MARKETPLACE: NotificationChannel.MARKETPLACE_IM,
    SalesChannel.PHONE: NotificationChannel.SMS,
}
# A code is read on the phone it was sent to; SMS first when there is a number.
VERIFICATION_PURPOSES = frozenset({NotificationPurpose.VERIFICATION_CODE})


def _recipient(order: Order) -> NotificationRecipient:
    contact = order.contact
    fields: dict[str, Any] = {
        "email": contact.email.strip() if contact.email else None,
        "phone": re.sub(r"[\s()-]", "", contact.phone) if contact.phone else None,
        "wechat_openid": contact.wechat_openid,
        "marketplace_im_id": contact.marketplace_im_id,
    }
    # An address the notifier would refuse is left out rather than failing the whole request:
    # the notifier then falls back to another channel.
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if not value:
            continue
        try:
            NotificationRecipient(**{name: value})
        except ValidationError:
            continue
        out[name] = value
    return NotificationRecipient(**out)


def notification_request(order: Order, notice: Notice) -> NotificationRequested:
    purpose = NotificationPurpose(notice.purpose)
    recipient = _recipient(order)
    preferred = PREFERRED_CHANNEL[order.channel]
    if purpose in VERIFICATION_PURPOSES and recipient.phone:
        preferred = NotificationChannel.SMS
    return NotificationRequested(
        idempotency_key=notice.idempotency_key,
        customer_id=order.customer_id,
        purpose=purpose,
        template=notice.template,
        parameters=dict(notice.parameters),
        preferred_channel=preferred,
        language=NotificationLanguage.EN if order.language == EN else NotificationLanguage.ZH_CN,
        recipient=recipient,
        requested_by="orders",
    )
