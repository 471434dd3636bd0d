"""Survey invitations as the notifier's ``NotificationRequested`` contract."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kefu_shared.contracts.notifier import (
    NotificationChannel,
    NotificationLanguage,
    NotificationPurpose,
    NotificationRecipient,
    NotificationRequested,
)
from pydantic import ValidationError

from kefu_feedback.domain.policy import SurveyPolicy

TEMPLATE = "survey_invitation"
REQUESTED_BY = "feedback"


@dataclass(frozen=True)
class Invitation:
    """Who is invited to which survey, and how they can be reached."""

    survey_id: str
    customer_id: str
    language: str
    channel: str | None
    email: str | None = None
    phone: str | None = None


def notification_language(language: str | None) -> NotificationLanguage:
    return (
        NotificationLanguage.ZH_CN
        if (language or "zh").startswith("zh")
        else NotificationLanguage.EN
    )


def _recipient(email: str | None, phone: str | None) -> NotificationRecipient:
    fields = {"email": (email or "").strip(), "phone": re.sub(r"[\s()-]", "", phone or "")}
    # An address the notifier would refuse is left out: another channel may still work.
    kept: dict[str, str] = {}
    for name, value in fields.items():
        if not value:
            continue
        try:
            NotificationRecipient.model_validate({name: value})
        except ValidationError:
            continue
        kept[name] = value
    return NotificationRecipient.model_validate(kept)


def invitation_request(
    invitation: Invitation, survey_url: str, policy: SurveyPolicy
) -> NotificationRequested:
    """The request; raises pydantic's ValidationError if the notifier could never accept it.

    Without an address of the customer (inquiry events carry none) the invitation goes to the
    shop's webhook, which reaches the customer by id; with one, back on the customer's channel.
    """
    recipient = _recipient(invitation.email, invitation.phone)
    if recipient.email or recipient.phone:
        preferred = policy.preferred_channel.get(invitation.channel or "")
    else:
        preferred = NotificationChannel.WEBHOOK
    return NotificationRequested(
        idempotency_key=invitation.survey_id,
        customer_id=invitation.customer_id,
        purpose=NotificationPurpose.SURVEY_INVITATION,
        template=TEMPLATE,
        parameters={"survey_url": survey_url},
        preferred_channel=preferred,
        language=notification_language(invitation.language),
        recipient=recipient,
        requested_by=REQUESTED_BY,
    )
