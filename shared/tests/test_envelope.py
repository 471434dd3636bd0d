from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from kefu_shared.envelope import Envelope, EventData
from pydantic import ValidationError


class ParcelShipped(EventData):
    event_type: ClassVar[str] = "test.parcel_shipped"
    event_version: ClassVar[int] = 2
    topic: ClassVar[str] = "kefu.test.events"
    subject_field: ClassVar[str] = "order_id"

    order_id: str
    carrier: str


def test_wrapping_an_event_uses_its_aggregate_id_as_subject_and_its_contract_as_type() -> None:
    env = Envelope.wrap(
        ParcelShipped(order_id="o-1", carrier="Yunda"),
        source="orders",
        correlation_id="c-1",
        causation_id="m-0",
    )
    assert env.subject == "o-1"
    assert env.type == "test.parcel_shipped"
    assert env.version == 2
    assert env.source == "orders"
    assert env.data == {"order_id": "o-1", "carrier": "Yunda"}
    assert len(env.id) == 32


def test_cloudevents_headers_mirror_the_envelope() -> None:
    when = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)
    env = Envelope.wrap(
        ParcelShipped(order_id="o-1", carrier="SF"),
        source="orders",
        correlation_id="c-9",
        time=when,
    )
    headers = env.kafka_headers()
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == env.id
    assert headers["ce_type"] == "kefu.test.parcel_shipped.v2"
    assert headers["ce_source"] == "/kefu/orders"
    assert headers["ce_subject"] == "o-1"
    assert headers["ce_time"] == "2026-11-11T00:00:00+00:00"
    assert headers["correlation_id"] == "c-9"
    assert "causation_id" not in headers


def test_body_round_trips_and_payload_validates_against_the_contract() -> None:
    env = Envelope.wrap(ParcelShipped(order_id="o-2", carrier="ZTO"), source="orders")
    back = Envelope[dict[str, Any]].from_kafka_body(env.kafka_body())
    assert back == Envelope[dict[str, Any]].model_validate(env.model_dump())
    assert back.payload(ParcelShipped) == ParcelShipped(order_id="o-2", carrier="ZTO")


def test_a_payload_missing_a_required_field_is_rejected_naming_it() -> None:
    env = Envelope.wrap(ParcelShipped(order_id="o-3", carrier="EMS"), source="orders")
    broken = env.model_copy(update={"data": {"order_id": "o-3"}})
    with pytest.raises(ValidationError, match="carrier"):
        broken.payload(ParcelShipped)


def test_unknown_fields_from_a_newer_producer_are_ignored() -> None:
    data = {"order_id": "o-4", "carrier": "SF", "added_in_a_later_minor": True}
    assert ParcelShipped.model_validate(data).carrier == "SF"
