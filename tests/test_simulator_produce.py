"""simulator.produce against the real broker and PostgreSQL: messages, dimensions, labels."""

from __future__ import annotations

import json

import psycopg2
import pytest

from labkit import simulator

from .conftest import consume_all, remove_simulation_rows

# 40 customers and 80 terminals on a 9 x 9 plane keep about the published
# density. S5 is off because its 300 km journeys do not fit on that plane.
TINY = simulator.SimulatorConfig(
    customers=40, terminals=80, plane_size=9.0, days=3, seed=5, impossible_travel_per_day=0
)


@pytest.fixture
def simulated_rows_removed(lab_running):
    """Delete the TINY simulation's labels and dimension rows after the test."""
    yield
    remove_simulation_rows(lab_running, TINY)


def fetch(settings, sql: str, params) -> list[tuple]:
    conn = psycopg2.connect(**settings.pg_connect_kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def test_produce_sends_messages_and_labels(scratch_topic, simulated_rows_removed):
    expected = {t.transaction_id: t for t in simulator.simulate(TINY).iter_transactions()}
    labels = {i: t.fraud_scenario for i, t in expected.items() if t.fraud_scenario}

    result = simulator.produce(scratch_topic, TINY)
    records = consume_all(scratch_topic, len(expected))
    messages = [json.loads(record.value) for record in records]
    stored = fetch(
        scratch_topic,
        "select transaction_id, scenario from fraud_label where transaction_id = any(%s)",
        (list(expected),),
    )
    cards = fetch(
        scratch_topic,
        "select count(*) from dim_card where card_id = any(%s) and not is_inferred",
        ([f"sim_card_{number:05d}" for number in range(TINY.customers)],),
    )

    assert result.delivered == len(expected)
    assert result.failed == []
    assert result.fraud_labels == len(labels)
    assert len(labels) > 0
    assert {m["transaction_id"] for m in messages} == set(expected)
    assert all(set(m) == set(expected[m["transaction_id"]].to_message()) for m in messages)
    assert not any("fraud_scenario" in m for m in messages)
    assert all(r.key.decode() == json.loads(r.value)["card_id"] for r in records)
    assert dict(stored) == labels
    assert cards[0][0] == TINY.customers
