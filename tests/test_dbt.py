"""Tests of the dbt project in dbt/ against the loaded lab warehouse.

dbt build runs once for the module. The checks compare the marts with
public.fact_transaction, so they assume that no transactions are loaded
while the module runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg2 import sql

from labkit.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO_ROOT / "dbt"
DBT_BIN = Path(sys.executable).parent / "dbt"
DBT_TIMEOUT_SECONDS = 600

# Schema and type of each relation that dbt build creates. generate_schema_name
# puts staging models and marts in their own schemas and seeds in the target
# schema.
EXPECTED_RELATIONS = {
    ("staging", "stg_fact_transaction"): "VIEW",
    ("staging", "stg_dim_customer"): "VIEW",
    ("staging", "stg_dim_card"): "VIEW",
    ("staging", "stg_dim_merchant"): "VIEW",
    ("staging", "stg_fraud_label"): "VIEW",
    ("marts", "daily_revenue"): "BASE TABLE",
    ("marts", "customer_kpis"): "BASE TABLE",
    ("marts", "merchant_analytics"): "BASE TABLE",
    ("marts", "daily_fraud_summary"): "BASE TABLE",
    ("analytics", "merchant_category_codes"): "BASE TABLE",
    ("analytics", "currencies"): "BASE TABLE",
    ("analytics", "countries"): "BASE TABLE",
}


def dbt_env(settings: Settings) -> dict[str, str]:
    """Return os.environ with the lab's LAB_PG_* settings and dbt tracking off."""
    env = dict(os.environ)
    env.update(
        {
            "LAB_PG_HOST": settings.pg_host,
            "LAB_PG_PORT": str(settings.pg_port),
            "LAB_PG_USER": settings.pg_user,
            "LAB_PG_PASSWORD": settings.pg_password,
            "LAB_PG_DATABASE": settings.pg_database,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        }
    )
    return env


def run_dbt(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run dbt on the repository's project and return the finished process."""
    command = [
        str(DBT_BIN),
        *arguments,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
    ]
    return subprocess.run(
        command,
        env=dbt_env(settings),
        capture_output=True,
        text=True,
        timeout=DBT_TIMEOUT_SECONDS,
        check=False,
    )


def failed_test_names() -> set[str]:
    """Return the names of the tests that failed in the last dbt invocation."""
    run_results = json.loads((DBT_PROJECT_DIR / "target" / "run_results.json").read_text())
    # A test's unique_id is "test.<project>.<name>.<hash>".
    return {
        result["unique_id"].split(".")[2]
        for result in run_results["results"]
        if result["unique_id"].startswith("test.") and result["status"] in ("fail", "error")
    }


def fetch_one(pg, query, params=()) -> tuple:
    with pg.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()


def fetch_all(pg, query, params=()) -> list[tuple]:
    with pg.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


@pytest.fixture(scope="module")
def built_marts(loaded_lab, settings) -> subprocess.CompletedProcess[str]:
    """Run dbt build once (seeds, models, tests) and return the process."""
    result = run_dbt(settings, "build")
    if result.returncode != 0:
        pytest.fail(f"dbt build exited with {result.returncode}:\n{result.stdout[-4000:]}")
    return result


def test_build_reports_no_errors(built_marts):
    last_line = built_marts.stdout.strip().splitlines()[-1]
    assert "ERROR=0" in last_line
    assert "SKIP=0" in last_line


def test_build_creates_relations_in_schemas(built_marts, pg):
    rows = fetch_all(
        pg,
        "select table_schema, table_name, table_type from information_schema.tables"
        " where table_schema in ('staging', 'marts', 'analytics')",
    )
    found = {(schema, name): table_type for schema, name, table_type in rows}
    for relation, table_type in EXPECTED_RELATIONS.items():
        assert found.get(relation) == table_type, relation


def test_daily_revenue_totals_match_fact(built_marts, pg):
    mart = fetch_one(
        pg,
        "select sum(transaction_count), sum(revenue), sum(flagged_count),"
        " sum(flagged_amount) from marts.daily_revenue",
    )
    fact = fetch_one(
        pg,
        "select count(*), sum(amount), count(*) filter (where is_flagged),"
        " coalesce(sum(amount) filter (where is_flagged), 0)"
        " from public.fact_transaction",
    )
    assert fact[0] > 0, "the lab loaded no transactions"
    assert mart[0] == fact[0]
    assert mart[1] == fact[1]
    assert mart[2] == fact[2]
    assert mart[3] == fact[3]


def test_daily_revenue_rows_per_day_and_currency(built_marts, pg):
    mart_rows = fetch_all(
        pg,
        "select event_date, currency, transaction_count, revenue"
        " from marts.daily_revenue",
    )
    fact_rows = fetch_all(
        pg,
        "select (event_time at time zone 'UTC')::date, currency::text,"
        " count(*), sum(amount) from public.fact_transaction group by 1, 2",
    )
    mart = {(day, currency): totals for day, currency, *totals in mart_rows}
    fact = {(day, currency): totals for day, currency, *totals in fact_rows}
    assert len(mart) == len(mart_rows), "daily_revenue repeats a day and currency"
    assert mart == fact


def test_customer_kpis_one_row_per_customer(built_marts, pg):
    mart_rows, mart_customers = fetch_one(
        pg, "select count(*), count(distinct customer_id) from marts.customer_kpis"
    )
    (fact_customers,) = fetch_one(
        pg, "select count(distinct customer_id) from public.fact_transaction"
    )
    assert mart_rows == fact_customers
    assert mart_customers == fact_customers


def test_customer_kpis_totals_match_fact(built_marts, pg):
    mart = fetch_one(
        pg,
        "select sum(transaction_count), sum(total_spend), sum(flagged_count),"
        " sum(labelled_fraud_count) from marts.customer_kpis",
    )
    fact = fetch_one(
        pg,
        "select count(*), sum(amount), count(*) filter (where is_flagged),"
        " count(fraud_label.transaction_id)"
        " from public.fact_transaction"
        " left join public.fraud_label using (transaction_id)",
    )
    assert mart[0] == fact[0]
    assert mart[1] == fact[1]
    assert mart[2] == fact[2]
    assert mart[3] == fact[3]


def test_customer_kpis_fraud_ratio(built_marts, pg):
    lowest, highest, wrong = fetch_one(
        pg,
        "select min(fraud_ratio), max(fraud_ratio),"
        " count(*) filter (where abs(fraud_ratio"
        " - flagged_count::numeric / transaction_count) > 0.00005)"
        " from marts.customer_kpis",
    )
    assert lowest >= 0
    assert highest <= 1
    assert wrong == 0


def test_merchant_analytics_totals_match_fact(built_marts, pg):
    mart = fetch_one(
        pg,
        "select sum(sales_count), sum(sales_amount), sum(flagged_count)"
        " from marts.merchant_analytics",
    )
    fact = fetch_one(
        pg,
        "select count(*), sum(amount), count(*) filter (where is_flagged)"
        " from public.fact_transaction",
    )
    assert mart[0] == fact[0]
    assert mart[1] == fact[1]
    assert mart[2] == fact[2]


def test_merchant_category_seed_covers_fact(built_marts, pg):
    rows = fetch_all(
        pg,
        "select distinct mcc from marts.merchant_analytics"
        " where mcc_description is null and mcc <> 'unknown' order by mcc",
    )
    assert rows == [], "MCCs missing from data/merchant_category_codes.csv"


def test_daily_fraud_summary_matches_labels(built_marts, pg):
    mart = fetch_one(
        pg,
        "select sum(transaction_count), sum(flagged_count),"
        " sum(labelled_fraud_count), sum(true_positive_count)"
        " from marts.daily_fraud_summary",
    )
    fact = fetch_one(
        pg,
        "select count(*), count(*) filter (where is_flagged),"
        " count(fraud_label.transaction_id),"
        " count(fraud_label.transaction_id) filter (where is_flagged)"
        " from public.fact_transaction"
        " left join public.fraud_label using (transaction_id)",
    )
    assert mart[0] == fact[0]
    assert mart[1] == fact[1]
    assert mart[2] == fact[2]
    assert mart[3] == fact[3]


def test_source_freshness_passes(built_marts, settings):
    result = run_dbt(settings, "source", "freshness")
    assert result.returncode == 0, result.stdout[-4000:]
    sources = json.loads((DBT_PROJECT_DIR / "target" / "sources.json").read_text())
    statuses = {source["unique_id"]: source["status"] for source in sources["results"]}
    assert statuses == {"source.payments.warehouse.fact_transaction": "pass"}


@pytest.mark.parametrize(
    ("column", "bad_value", "failing_test"),
    [
        pytest.param(
            "channel",
            "atm",
            "accepted_values_stg_fact_transaction_channel",
            id="channel-atm",
        ),
        pytest.param(
            "mcc",
            "0000",
            "relationships_stg_fact_transaction_mcc",
            id="mcc-missing-from-seed",
        ),
        pytest.param(
            "fraud_score",
            "1.5",
            "between_stg_fact_transaction_fraud_score",
            id="fraud-score-above-1",
        ),
    ],
)
def test_planted_bad_value_fails_dbt_test(
    built_marts, pg, settings, column, bad_value, failing_test
):
    transaction_id, original = fetch_one(
        pg,
        sql.SQL(
            "select transaction_id, {} from public.fact_transaction"
            " order by transaction_id limit 1"
        ).format(sql.Identifier(column)),
    )
    update = sql.SQL(
        "update public.fact_transaction set {} = %s where transaction_id = %s"
    ).format(sql.Identifier(column))

    with pg.cursor() as cursor:
        cursor.execute(update, (bad_value, transaction_id))
    try:
        result = run_dbt(settings, "test", "--select", "stg_fact_transaction")
        failed = failed_test_names()
    finally:
        with pg.cursor() as cursor:
            cursor.execute(update, (original, transaction_id))

    assert result.returncode != 0
    assert any(name.startswith(failing_test) for name in failed), failed


def test_duplicate_mart_row_fails_dbt_test(built_marts, pg, settings):
    (row_id,) = fetch_one(
        pg,
        "insert into marts.daily_revenue select * from marts.daily_revenue"
        " order by event_date, currency limit 1 returning ctid",
    )
    try:
        result = run_dbt(settings, "test", "--select", "daily_revenue")
        failed = failed_test_names()
    finally:
        with pg.cursor() as cursor:
            cursor.execute("delete from marts.daily_revenue where ctid = %s::tid", (row_id,))

    assert result.returncode != 0
    assert any(
        name.startswith("unique_combination_of_columns_daily_revenue") for name in failed
    ), failed
    assert "daily_revenue_matches_fact_amounts" in failed
