"""The stateful part of the query through real Kafka, Spark and Postgres: card state and lateness.

One card's payments go to a one-partition scratch topic and the query reads
them four offsets per micro-batch, so the watermark moves between batches and
a payment sent after it has moved arrives late.
"""

from __future__ import annotations

import json
import uuid

import psycopg2
import pytest

from labkit import kafka_broker, recovery, report
from labkit.config import Settings

CARD = "card_state_test"
# (offset, event time, amount): four quick payments, a later four, then one that is late.
PAYMENTS = [
    (0, "2018-05-02T10:00:00+00:00", "20.00"),
    (1, "2018-05-02T10:02:00+00:00", "22.00"),
    (2, "2018-05-02T10:04:00+00:00", "18.00"),
    (3, "2018-05-02T10:06:00+00:00", "20.00"),
    (4, "2018-05-02T12:00:00+00:00", "21.00"),
    (5, "2018-05-02T12:20:00+00:00", "19.00"),
    (6, "2018-05-02T12:40:00+00:00", "200.00"),
    (7, "2018-05-02T13:00:00+00:00", "20.00"),
    # The watermark is now 2018-05-01 13:00, labkit.features.WATERMARK_DELAY
    # (a day) behind 13:00.
    (8, "2018-05-01T10:30:00+00:00", "20.00"),
    (9, "2018-05-02T13:05:00+00:00", "20.00"),
    # Rejected as event_time_in_future: it must not move the watermark either.
    (10, "2999-01-01T00:00:00+00:00", "20.00"),
    (11, "2018-05-02T13:10:00+00:00", "20.00"),
    (12, "2018-05-02T13:15:00+00:00", "20.00"),
]
LATE_OFFSET = 8
REJECTED_OFFSET = 10


def message(offset: int, event_time: str, amount: str, suffix: str) -> str:
    return json.dumps({
        "transaction_id": f"card-state-{suffix}-{offset}",
        "event_time": event_time,
        "customer_id": "cus_card_state",
        "card_id": CARD,
        "merchant_id": "mer_card_state",
        "amount": amount,
        "currency": "EUR",
        "channel": "ecommerce",
        "mcc": "5411",
    })


@pytest.fixture(scope="module")
def streamed(lab_running: Settings, tmp_path_factory: pytest.TempPathFactory):
    """Produce PAYMENTS to a scratch topic, stream it 4 offsets at a time, read the rows back."""
    suffix = uuid.uuid4().hex[:8]
    scratch = recovery.scratch_settings(
        lab_running,
        topic=f"test-card-state-{suffix}",
        query_name=f"test_card_state_{suffix}",
        topic_partitions=1,
        max_offsets_per_trigger=4,
    )
    lines = tmp_path_factory.mktemp("card-state") / "payments.jsonl"
    lines.write_text("".join(message(*payment, suffix) + "\n" for payment in PAYMENTS))
    kafka_broker.create_topic(scratch)
    try:
        produced = recovery.run_labkit(scratch, "produce", "--raw-file", str(lines),
                                       log_name="test-card-state-produce")
        assert produced.returncode == 0, produced.log[-2000:]
        run = recovery.run_labkit(scratch, "stream", "--available-now",
                                  log_name="test-card-state-stream")
        assert run.returncode == 0, run.log[-3000:]
        yield scratch, read_rows(scratch), report.stream_counts(scratch)
    finally:
        recovery.remove_scratch(scratch)


def read_rows(settings: Settings) -> dict[int, dict]:
    with psycopg2.connect(**settings.pg_connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "select kafka_offset, card_payments_10m, card_prior_payments, card_mean_amount,"
            " late_for_card_rules, fraud_rules from fact_transaction where kafka_topic = %s",
            (settings.topic,),
        )
        names = [column.name for column in cur.description]
        found = {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}
    conn.close()
    return found


def test_every_payment_is_loaded_the_late_one_included(streamed):
    _, rows, counts = streamed

    assert sorted(rows) == [offset for offset, _, _ in PAYMENTS if offset != REJECTED_OFFSET]
    assert counts["produced"] == len(PAYMENTS)
    assert counts["loaded"] == len(PAYMENTS) - 1
    assert counts["quarantined"] == 1
    assert counts["unaccounted"] == 0


def test_the_late_payment_is_counted_and_skips_card_rules(streamed):
    _, rows, counts = streamed
    late = rows[LATE_OFFSET]

    # Offsets 11 and 12 come after the rejected far-future time and are on time.
    assert counts["late"] == 1
    assert late["late_for_card_rules"] is True
    assert late["card_payments_10m"] is None
    assert late["card_prior_payments"] is None
    assert [offset for offset, row in rows.items() if row["late_for_card_rules"]] == [LATE_OFFSET]


def test_velocity_counts_payments_within_ten_minutes(streamed):
    _, rows, _ = streamed

    assert [rows[offset]["card_payments_10m"] for offset in range(8)] == [1, 2, 3, 4, 1, 1, 1, 1]
    assert "card_velocity" in rows[3]["fraud_rules"]
    assert "card_velocity" not in rows[2]["fraud_rules"]


def test_profile_carries_over_between_micro_batches(streamed):
    _, rows, _ = streamed

    # Offset 6 is the seventh payment; the six before it average 20.
    assert rows[6]["card_prior_payments"] == 6
    assert rows[6]["card_mean_amount"] == pytest.approx(20.0)
    assert "amount_above_profile" in rows[6]["fraud_rules"]
    # The late payment did not enter the profile: offset 9 follows eight payments.
    assert rows[9]["card_prior_payments"] == 8

