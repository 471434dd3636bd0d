"""Personal data rules every service applies (DOMAIN.md 6).

Payment card numbers never get stored or published: every free-text field is passed through
``redact_card_numbers`` before anything is written. Phones, e-mails and addresses are shown
masked to roles that may not see them, and always in logs.
"""

from __future__ import annotations

import re

# 13-19 digits, optionally grouped by single spaces or dashes ("4111 1111 1111 1111").
_CANDIDATE = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")
MASK = "[card number removed]"


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def redact_card_numbers(text: str) -> str:
    """Replace every Luhn-valid 13-19 digit run; other long numbers (order ids, phones) stay.

    Luhn rejects nine in ten random numbers, so an order id is rarely mistaken for a card; when
    it is, masking it costs an extra question, while keeping a card would break the rules.
    """

    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return MASK
        return match.group(0)

    return _CANDIDATE.sub(replace, text)


def mask_phone(phone: str | None) -> str | None:
    """138****5678: enough for an agent to recognise, not enough to call."""
    if not phone:
        return phone
    digits = phone.strip()
    if len(digits) <= 4:
        return "*" * len(digits)
    keep = 3 if len(digits) >= 7 else 1
    return digits[:keep] + "*" * (len(digits) - keep - 4) + digits[-4:]


def mask_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return email
    local, domain = email.split("@", 1)
    return (local[:1] + "***@" + domain) if local else "***@" + domain


def mask_address(address: str | None) -> str | None:
    """Keep the region (first word or characters), hide the street and the number."""
    if not address:
        return address
    text = address.strip()
    if " " in text:
        head = text.split(" ", 1)[0]
        return f"{head} ****"
    return text[:3] + "****" if len(text) > 3 else "****"


# Contacts inside free text (log lines, tracebacks): an e-mail address, or a phone number of
# 10-15 digits (8-15 after a "+") in groups split by single spaces or dashes. Dates (8 digits),
# offsets and counts are shorter; digits glued to letters or dashes (ids, UUIDs) or followed by a
# colon (a date and its time) are not phones. A 13-digit international number that passes
# Luhn reads as a card number: removed, which masks it too.
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w+-])(?:\+\d(?:[ -]?\d){7,14}|\d(?:[ -]?\d){9,14})(?![\w:-])")


def mask_contacts_in_text(text: str) -> str:
    """Card numbers removed, e-mail addresses and phone numbers masked, anywhere in ``text``."""
    text = redact_card_numbers(text)
    text = _EMAIL.sub(lambda m: mask_email(m.group(0)) or "", text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)) or "", text)
