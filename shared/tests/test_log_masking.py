"""Contacts never reach a log line (DOMAIN.md 6: masked "in logs always"), whoever logged them:
the service's own message, FastStream's or a library's exception quoting a customer's input."""

import json
import logging

import pytest
from kefu_shared.observability import JsonFormatter
from kefu_shared.pii import mask_contacts_in_text
from pydantic import BaseModel, ValidationError, field_validator

PHONE = "13812345678"
EMAIL = "li.wei@example.com"
CARD = "4111 1111 1111 1111"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"customer {PHONE} asked", "customer 138****5678 asked"),
        ("call 138-1234-5678.", "call 138******5678."),
        ("tel:+1 415 555 0100", "tel:+1 ********0100"),
        (f"reply to {EMAIL}", "reply to l***@example.com"),
        (f"paid with {CARD}", "paid with [card number removed]"),
    ],
)
def test_contacts_in_free_text_are_masked(text: str, masked: str) -> None:
    assert mask_contacts_in_text(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "at 2026-12-04 08:13:21 after 1500 messages in 12 ms",
        "dead-lettering kefu.inquiry.chat[3]@1234567 after 4 attempt(s)",
        "order O-20261204123456, inquiry 123e4567-e89b-12d3-a456-426614174000",
        "trace 4bf92f3577b34da6a3ce929d0e0e4736",
    ],
)
def test_dates_offsets_and_ids_are_left_readable(text: str) -> None:
    assert mask_contacts_in_text(text) == text


class Contact(BaseModel):
    phone: str

    @field_validator("phone")
    @classmethod
    def known_prefix(cls, value: str) -> str:
        raise ValueError("unknown carrier")


def log_line(record: logging.LogRecord) -> dict[str, str]:
    parsed: dict[str, str] = json.loads(JsonFormatter("inquiry").format(record))
    return parsed


def test_a_log_line_masks_contacts_in_its_message() -> None:
    record = logging.LogRecord(
        "kefu", logging.INFO, __file__, 1, "contact %s / %s", (PHONE, EMAIL), None
    )
    line = log_line(record)
    assert line["message"] == "contact 138****5678 / l***@example.com"


def test_a_traceback_quoting_the_customers_input_is_masked() -> None:
    with pytest.raises(ValidationError) as caught:
        Contact(phone=PHONE)
    exc_info = (caught.type, caught.value, caught.tb)
    record = logging.LogRecord("kefu", logging.ERROR, __file__, 1, "handler failed", (), exc_info)
    line = log_line(record)
    assert "unknown carrier" in line["error"]  # the traceback is still there
    assert "input_value='138****5678'" in line["error"]
    assert PHONE not in json.dumps(line)
