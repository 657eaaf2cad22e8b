"""Message validation in a real Spark session, on hand-made Kafka records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pyspark.sql import Row
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from labkit.validation import validate

# The columns Spark's Kafka source gives every record.
KAFKA_SCHEMA = StructType([
    StructField("key", BinaryType()),
    StructField("value", BinaryType()),
    StructField("topic", StringType()),
    StructField("partition", IntegerType()),
    StructField("offset", LongType()),
    StructField("timestamp", TimestampType()),
])

GOOD = {
    "transaction_id": "tx-1",
    "event_time": "2018-04-01T10:15:00.250000+00:00",
    "customer_id": "cus_00001",
    "card_id": "card_000001",
    "merchant_id": "mer_00001",
    "amount": "42.10",
    "currency": "EUR",
    "channel": "card_present",
    "mcc": "5411",
}


def message(**changes) -> bytes:
    body = dict(GOOD)
    for name, value in changes.items():
        if value is ...:
            body.pop(name)
        else:
            body[name] = value
    return json.dumps(body).encode()


def validated(spark, values: list[bytes | None]) -> list[Row]:
    records = [
        (None, value, "t", 0, offset, datetime(2026, 1, 1)) for offset, value in enumerate(values)
    ]
    frame = spark.createDataFrame(records, KAFKA_SCHEMA)
    return sorted(validate(frame).collect(), key=lambda row: row.kafka_offset)


def reason_of(spark, value: bytes | None) -> str | None:
    return validated(spark, [value])[0].reject_reason


def test_valid_message_is_typed_exactly(spark):
    row = validated(spark, [message()])[0]

    assert row.reject_reason is None
    assert row.transaction_id == "tx-1"
    assert row.amount == Decimal("42.10")
    assert row.currency == "EUR"
    assert row.event_time == datetime(2018, 4, 1, 10, 15, 0, 250000)


def test_epoch_milliseconds_are_converted(spark):
    millis = int(datetime(2018, 4, 1, 10, 15, tzinfo=UTC).timestamp() * 1000)
    row = validated(spark, [message(event_time=millis)])[0]

    assert row.reject_reason is None
    assert row.event_time == datetime(2018, 4, 1, 10, 15)


def test_unknown_extra_fields_are_accepted(spark):
    assert reason_of(spark, message(loyalty_tier="gold")) is None


def test_missing_mcc_is_accepted(spark):
    assert reason_of(spark, message(mcc=...)) is None


BAD_MESSAGES = [
    (None, "empty_value"),
    (b"", "empty_value"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (b"not json", "malformed_json"),
    (message()[:-5], "malformed_json"),
    (b"[1, 2, 3]", "not_json_object"),
    (b"42", "not_json_object"),
    (message(amount=...), "missing_amount"),
    (message(customer_id=None), "missing_customer_id"),
    (message(event_time=...), "missing_event_time"),
    (message(card_id=12345), "invalid_type_card_id"),
    (message(amount=42.1), "invalid_type_amount"),
    (message(amount="42,10"), "invalid_amount"),
    (message(amount="0.00"), "amount_not_positive"),
    (message(amount="-3.00"), "amount_not_positive"),
    (message(amount="1.005"), "amount_too_many_decimals"),
    (message(amount="12345678901.00"), "amount_out_of_range"),
    (message(currency="EURO"), "unknown_currency"),
    (message(currency="XYZ"), "unknown_currency"),
    (message(channel="atm"), "invalid_channel"),
    (message(mcc="54"), "invalid_mcc"),
    (message(transaction_id="   "), "invalid_transaction_id"),
    (message(merchant_id="a\u0000b"), "nul_character"),
    (message(event_time="yesterday"), "invalid_event_time"),
    (message(event_time=True), "invalid_type_event_time"),
    (message(event_time="1999-12-31T23:00:00+00:00"), "event_time_too_old"),
]


@pytest.fixture(scope="module")
def bad_message_reasons(spark) -> list[str | None]:
    """Validate every bad message in one Spark job; Spark's per-job cost dominates otherwise."""
    rows = validated(spark, [value for value, _ in BAD_MESSAGES])
    return [row.reject_reason for row in rows]


@pytest.mark.parametrize(("index", "reason"), list(enumerate(r for _, r in BAD_MESSAGES)))
def test_bad_message_gets_its_reason(bad_message_reasons, index, reason):
    assert bad_message_reasons[index] == reason, BAD_MESSAGES[index][0]


def test_event_time_far_in_future_is_rejected(spark):
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    soon = (datetime.now(UTC) + timedelta(hours=2)).isoformat()

    assert reason_of(spark, message(event_time=future)) == "event_time_in_future"
    assert reason_of(spark, message(event_time=soon)) is None


def test_every_record_keeps_its_kafka_position(spark):
    rows = validated(spark, [message(), b"bad", message(transaction_id="tx-2")])

    assert [row.kafka_offset for row in rows] == [0, 1, 2]
    assert [row.raw_value for row in rows][1] == bytearray(b"bad")
    assert [row.reject_reason for row in rows] == [None, "malformed_json", None]
