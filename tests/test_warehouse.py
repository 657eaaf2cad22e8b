"""The star schema's declarations and the idempotent micro-batch load."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from labkit import warehouse

LABKIT = str(Path(sys.executable).with_name("labkit"))


def rows(pg, sql: str, params=None) -> list[tuple]:
    with pg.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def column_type(pg, table: str, column: str) -> str:
    return rows(
        pg,
        "select data_type from information_schema.columns "
        "where table_name = %s and column_name = %s",
        (table, column),
    )[0][0]


@pytest.mark.parametrize(
    ("table", "key"),
    [("fact_transaction", "transaction_id"), ("dim_customer", "customer_id"),
     ("dim_card", "card_id"), ("dim_merchant", "merchant_id")],
)
def test_tables_declare_text_primary_keys(pg, table, key):
    declared = rows(
        pg,
        "select kcu.column_name from information_schema.table_constraints tc "
        "join information_schema.key_column_usage kcu using (constraint_name, table_name) "
        "where tc.table_name = %s and tc.constraint_type = 'PRIMARY KEY'",
        (table,),
    )

    assert declared == [(key,)]
    assert column_type(pg, table, key) == "text"


def test_fact_declares_foreign_keys_to_each_dimension(pg):
    references = rows(
        pg,
        "select kcu.column_name, ccu.table_name from information_schema.table_constraints tc "
        "join information_schema.key_column_usage kcu using (constraint_name) "
        "join information_schema.constraint_column_usage ccu using (constraint_name) "
        "where tc.table_name = 'fact_transaction' and tc.constraint_type = 'FOREIGN KEY' "
        "order by kcu.column_name",
    )

    assert references == [
        ("card_id", "dim_card"), ("customer_id", "dim_customer"), ("merchant_id", "dim_merchant")
    ]


def test_times_are_timestamptz_and_money_is_numeric(pg):
    assert column_type(pg, "fact_transaction", "event_time") == "timestamp with time zone"
    assert column_type(pg, "fact_transaction", "loaded_at") == "timestamp with time zone"
    assert column_type(pg, "fact_transaction", "amount") == "numeric"


def staged(transaction_id: str, customer: str, card: str, merchant: str, offset: int) -> tuple:
    values = {
        "transaction_id": transaction_id, "event_time": "2018-04-02T08:00:00.000000Z",
        "customer_id": customer, "card_id": card, "merchant_id": merchant,
        "amount": Decimal("12.34"), "currency": "EUR", "channel": "ecommerce", "mcc": "5411",
        "fraud_score": Decimal("0.000"), "is_flagged": False, "fraud_rules": [],
        "card_payments_10m": 1, "card_prior_payments": 0, "card_mean_amount": None,
        "travel_km": None, "travel_kmh": None, "terminal_confirmed_frauds": 0,
        "late_for_card_rules": False,
        "kafka_topic": "test-warehouse", "kafka_partition": 0, "kafka_offset": offset,
        "kafka_timestamp": "2026-01-01T00:00:00.000000Z",
    }
    return tuple(values[name] for name in warehouse.FACT_COLUMNS)


@pytest.fixture
def unknown_ids(pg):
    """Ids of a customer, card and merchant the dimensions do not have; removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    ids = (f"cus_new_{suffix}", f"card_new_{suffix}", f"mer_new_{suffix}")
    yield ids
    with pg.cursor() as cur:
        cur.execute("delete from fact_transaction where kafka_topic = 'test-warehouse'")
        cur.execute("delete from duplicate_message where kafka_topic = 'test-warehouse'")
        cur.execute("delete from quarantine where kafka_topic = 'test-warehouse'")
        cur.execute("delete from stream_batch where query_name = 'test-warehouse'")
        cur.execute("delete from dim_card where card_id = %s", (ids[1],))
        cur.execute("delete from dim_customer where customer_id = %s", (ids[0],))
        cur.execute("delete from dim_merchant where merchant_id = %s", (ids[2],))


def test_batch_load_is_idempotent(loaded_lab, pg, unknown_ids):
    customer, card, merchant = unknown_ids
    valid = [
        staged(f"tx-{customer}-1", customer, card, merchant, 0),
        staged(f"tx-{customer}-2", customer, card, merchant, 1),
        staged(f"tx-{customer}-1", customer, card, merchant, 2),
    ]
    rejected = [("test-warehouse", 0, 3, b"\x00bad", "malformed_json")]
    conn = warehouse.connect(loaded_lab)

    first = warehouse.load_batch(conn, "test-warehouse", 0, valid, rejected, "2026-01-01T00:00Z")
    second = warehouse.load_batch(conn, "test-warehouse", 0, valid, rejected, "2026-01-01T00:00Z")
    conn.close()
    facts = rows(pg, "select transaction_id, kafka_offset from fact_transaction "
                     "where kafka_topic = 'test-warehouse' order by 1")

    assert first == second
    assert (first.messages, first.loaded, first.duplicates, first.quarantined) == (4, 2, 1, 1)
    assert facts == [(f"tx-{customer}-1", 0), (f"tx-{customer}-2", 1)]
    quarantined = rows(pg, "select raw_value, reason from quarantine "
                           "where kafka_topic = 'test-warehouse'")
    assert [(bytes(raw), reason) for raw, reason in quarantined] == [
        (b"\x00bad", "malformed_json")
    ]


def test_unknown_dimensions_become_inferred_rows(loaded_lab, pg, unknown_ids):
    customer, card, merchant = unknown_ids
    conn = warehouse.connect(loaded_lab)
    warehouse.load_batch(conn, "test-warehouse", 0,
                         [staged(f"tx-{customer}", customer, card, merchant, 0)], [], "2026-01-01")

    inferred = rows(pg, "select is_inferred, full_name from dim_customer where customer_id = %s",
                    (customer,))
    card_owner = rows(pg, "select customer_id, is_inferred from dim_card where card_id = %s",
                      (card,))
    merchant_mcc = rows(pg, "select mcc, is_inferred from dim_merchant where merchant_id = %s",
                        (merchant,))

    # The generator's upsert later fills the inferred row in.
    warehouse.upsert_dimension(conn, "dim_customer", [{
        "customer_id": customer, "full_name": "Late Arrival", "email": "late@example.com",
        "city": "Lyon", "country_code": "FR", "latitude": 45.75, "longitude": 4.85,
        "signup_date": "2018-01-01",
    }])
    conn.commit()
    conn.close()
    filled = rows(pg, "select is_inferred, full_name from dim_customer where customer_id = %s",
                  (customer,))

    assert inferred == [(True, None)]
    assert card_owner == [(customer, True)]
    assert merchant_mcc == [("5411", True)]
    assert filled == [(False, "Late Arrival")]


def test_report_command_prints_the_counts(loaded_lab):
    result = subprocess.run([LABKIT, "report", "--json"], capture_output=True, text=True,
                            timeout=60)
    counts = json.loads(result.stdout)

    assert result.returncode == 0, result.stderr
    assert {"produced", "loaded", "quarantined", "flagged", "marts"} <= set(counts)
    assert counts["produced"] == counts["loaded"] + counts["quarantined"] + counts["duplicates"]
    assert counts["flagged"] > 0
