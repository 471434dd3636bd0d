"""Survey invitations as the notifier's ``NotificationRequested`` contract."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kefu_shared.contracts.notifier import (
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

    Inquiry events carry no personal data, so an inquiry's invitation names no address: the
    notifier addresses it from the contact it already holds for the customer (it has answered
    them before). The customer's channel is preferred either way.
    """
    recipient = _recipient(invitation.email, invitation.phone)
    preferred = policy.preferred_channel.get(invitation.channel or "")
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
