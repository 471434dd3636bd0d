"""Progress notices of the domain as the notifier's ``NotificationRequested`` contract."""

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
from pydantic import ValidationError

from kefu_aftersales.domain.case import Case, Notice

# Where the customer is most likely to read a notice: back where they asked or bought. The chat
# widget and the shop's app have no channel of their own in the notifier: app push stands in.
PREFERRED_CHANNEL = {
    "chat": NotificationChannel.APP_PUSH,
    "app": NotificationChannel.APP_PUSH,
    "phone": NotificationChannel.SMS,
    "email": NotificationChannel.EMAIL,
    "web": NotificationChannel.EMAIL,
    "social": NotificationChannel.WECHAT,
    "wechat": NotificationChannel.WECHAT,
    "marketplace": NotificationChannel.MARKETPLACE_IM,
}


def recipient(case: Case) -> NotificationRecipient:
    fields: dict[str, Any] = {
        "email": case.contact.email.strip() if case.contact.email else None,
        "phone": re.sub(r"[\s()-]", "", case.contact.phone) if case.contact.phone else None,
        "wechat_openid": case.contact.wechat_openid,
        "marketplace_im_id": case.contact.marketplace_im_id,
    }
    # An address the notifier would refuse is left out rather than failing the whole request:
    # the notifier then uses another channel, which beats no notice at all.
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


def notification_request(case: Case, notice: Notice) -> NotificationRequested:
    return NotificationRequested(
        idempotency_key=notice.idempotency_key,
        customer_id=case.customer_id,
        purpose=NotificationPurpose.AFTERSALES_PROGRESS,
        template=notice.template,
        parameters=dict(notice.parameters),
        preferred_channel=PREFERRED_CHANNEL.get(case.channel or ""),
        language=NotificationLanguage(case.language),
        recipient=recipient(case),
        requested_by="aftersales",
    )
