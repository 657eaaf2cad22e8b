"""Tests of the dbt project in dbt/ against the loaded lab warehouse.

dbt build runs once for the module. The checks compare the marts with
public.fact_transaction, so they assume that no transactions are loaded
while the module runs. Tests that plant rows remove them afterwards and, where
the rows reached an incremental mart, rebuild the marts with --full-refresh.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import NamedTuple

import pytest
from psycopg2 import sql

from .dbt_helpers import (
    MARTS,
    copy_marts,
    count_differing_rows,
    dbt_target_dir,
    dbt_test_statuses,
    failed_test_names,
    run_dbt,
)

# Schema and type of each relation that dbt build creates. generate_schema_name
# puts staging models and marts in their own schemas and seeds in the target
# schema.
EXPECTED_RELATIONS = {
    ("staging", "stg_fact_transaction"): "VIEW",
    ("staging", "stg_dim_customer"): "VIEW",
    ("staging", "stg_dim_card"): "VIEW",
    ("staging", "stg_dim_merchant"): "VIEW",
    ("staging", "stg_fraud_label"): "VIEW",
    **{("marts", mart): "BASE TABLE" for mart in MARTS},
    ("analytics", "merchant_category_codes"): "BASE TABLE",
    ("analytics", "currencies"): "BASE TABLE",
    ("analytics", "countries"): "BASE TABLE",
}

# The unit tests in the marts' YAML files, which dbt build runs before it
# builds each model.
EXPECTED_UNIT_TESTS = {
    "daily_revenue_rebuilds_late_and_lookback_days",
    "daily_revenue_rebuilds_run_interval",
    "daily_fraud_summary_counts_flags_and_labels",
    "daily_fraud_summary_fills_empty_mart",
    "detection_quality_handles_zero_denominators",
    "detection_quality_has_no_rows_without_days",
    "customer_kpis_maps_inferred_customer_to_unknown",
    "merchant_category_sales_prefers_message_mcc",
    "merchant_location_sales_puts_inferred_merchants_in_unknown",
}

# The default of the var lookback_days in dbt_project.yml.
LOOKBACK_DAYS = 3


class Build(NamedTuple):
    """The finished dbt build and the status of each test it ran."""

    stdout: str
    test_statuses: dict[str, str]


def fetch_one(pg, query, params=()) -> tuple:
    with pg.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()


def fetch_all(pg, query, params=()) -> list[tuple]:
    with pg.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


@pytest.fixture(scope="module")
def built_marts(loaded_lab, settings) -> Build:
    """Run dbt build once (seeds, models, data and unit tests) and return it."""
    result = run_dbt(settings, "build", "--full-refresh")
    if result.returncode != 0:
        pytest.fail(f"dbt build exited with {result.returncode}:\n{result.stdout[-4000:]}")
    return Build(result.stdout, dbt_test_statuses(settings))


@pytest.fixture(scope="module")
def generated_docs(built_marts, settings) -> tuple[dict, dict]:
    """Run dbt docs generate once and return its catalog and manifest."""
    result = run_dbt(settings, "docs", "generate")
    assert result.returncode == 0, result.stdout[-4000:]
    target = dbt_target_dir(settings)
    catalog = json.loads((target / "catalog.json").read_text())
    manifest = json.loads((target / "manifest.json").read_text())
    return catalog, manifest


def rebuild_marts(settings) -> None:
    """Rebuild every model from scratch, as after the module's dbt build."""
    result = run_dbt(settings, "run", "--full-refresh")
    assert result.returncode == 0, result.stdout[-4000:]


def event_date_versions(pg, mart: str) -> dict:
    """Return event_date -> xmin of the mart's rows, joined when a day has several.

    PostgreSQL gives a re-inserted row the id of the inserting transaction
    (xmin), so a day whose value changes between two calls was rewritten.
    """
    query = sql.SQL(
        "select event_date, string_agg(xmin::text, ',' order by xmin::text)"
        " from {} group by event_date"
    ).format(sql.Identifier("marts", mart))
    return dict(fetch_all(pg, query))


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
        "select event_date, currency, transaction_count, revenue from marts.daily_revenue",
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


@pytest.mark.parametrize("mart", ["merchant_category_sales", "merchant_location_sales"])
def test_merchant_sales_match_fact_per_currency(built_marts, pg, mart):
    mart_rows = fetch_all(
        pg,
        sql.SQL(
            "select currency, sum(transaction_count), sum(sales_amount),"
            " sum(flagged_count) from {} group by currency"
        ).format(sql.Identifier("marts", mart)),
    )
    fact_rows = fetch_all(
        pg,
        "select currency::text, count(*), sum(amount),"
        " count(*) filter (where is_flagged)"
        " from public.fact_transaction group by currency",
    )
    mart_totals = {currency: totals for currency, *totals in mart_rows}
    fact_totals = {currency: totals for currency, *totals in fact_rows}
    assert mart_totals == fact_totals


def test_merchant_category_seed_covers_fact(built_marts, pg):
    rows = fetch_all(
        pg,
        "select distinct mcc from marts.merchant_category_sales"
        " where risk_level is null order by mcc",
    )
    assert rows == [], "MCCs missing from data/merchant_category_codes.csv"


def test_merchant_location_sales_without_unknown_member(built_marts, pg):
    # The generator writes every merchant before its transactions, so the
    # loaded lab has no inferred merchant and no sales in the unknown member.
    (unknown,) = fetch_one(
        pg,
        "select count(*) from marts.merchant_location_sales"
        " where is_unknown_location or country_code = 'ZZ'",
    )
    (unnamed,) = fetch_one(
        pg,
        "select count(*) from marts.merchant_location_sales"
        " where country_name is null or currency_name is null",
    )
    assert unknown == 0
    assert unnamed == 0


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


def test_detection_quality_overall_matches_fact(built_marts, pg):
    overall = fetch_all(
        pg,
        "select transaction_count, flagged_count, labelled_fraud_count,"
        " true_positive_count, flag_precision, flag_recall"
        " from marts.detection_quality where period_type = 'overall'",
    )
    fact = fetch_one(
        pg,
        "select count(*), count(*) filter (where is_flagged),"
        " count(fraud_label.transaction_id),"
        " count(fraud_label.transaction_id) filter (where is_flagged)"
        " from public.fact_transaction"
        " left join public.fraud_label using (transaction_id)",
    )
    _transactions, flagged, labelled, true_positives = fact
    assert len(overall) == 1
    assert overall[0][:4] == fact
    assert flagged > 0, "the lab's rules flagged nothing"
    assert labelled > 0, "the lab has no fraud labels"
    assert overall[0][4] == round(Decimal(true_positives) / flagged, 4)
    assert overall[0][5] == round(Decimal(true_positives) / labelled, 4)


def test_detection_quality_has_day_per_fraud_summary_row(built_marts, pg):
    (missing,) = fetch_one(
        pg,
        "select count(*) from marts.daily_fraud_summary as summary"
        " full join (select * from marts.detection_quality"
        " where period_type = 'day') as quality"
        " on summary.event_date = quality.first_event_date"
        " where summary.event_date is null or quality.first_event_date is null",
    )
    assert missing == 0


def test_build_runs_unit_tests(built_marts):
    unit_tests = {
        name: status
        for name, status in built_marts.test_statuses.items()
        if name in EXPECTED_UNIT_TESTS
    }
    assert set(unit_tests) == EXPECTED_UNIT_TESTS
    assert set(unit_tests.values()) == {"pass"}


def test_docs_generate_writes_catalog(generated_docs):
    catalog, _manifest = generated_docs
    for mart in MARTS:
        assert f"model.payments.{mart}" in catalog["nodes"], mart


def test_every_column_is_documented(generated_docs):
    catalog, manifest = generated_docs
    undocumented = []
    for unique_id, table in catalog["nodes"].items():
        if not unique_id.startswith(("model.", "seed.")):
            continue
        documented = {
            name.lower(): column["description"]
            for name, column in manifest["nodes"][unique_id]["columns"].items()
        }
        for column in table["columns"]:
            if not documented.get(column.lower(), "").strip():
                undocumented.append(f"{unique_id}.{column}")
    assert undocumented == []


def test_every_description_states_grain_first(generated_docs):
    _catalog, manifest = generated_docs
    nodes = [
        node for node in manifest["nodes"].values() if node["resource_type"] in ("model", "seed")
    ]
    assert nodes
    for node in nodes:
        assert node["description"].startswith("One row per"), node["unique_id"]


def test_second_run_changes_nothing(built_marts, pg, settings):
    copy_marts(pg, "before_")
    versions_before = event_date_versions(pg, "daily_fraud_summary")

    result = run_dbt(settings, "run")

    assert result.returncode == 0, result.stdout[-4000:]
    for mart in MARTS:
        assert count_differing_rows(pg, "before_", mart) == 0, mart
    # The run rewrote only the newest day and the lookback days before it.
    versions_after = event_date_versions(pg, "daily_fraud_summary")
    newest_day = max(versions_before)
    rewritten = {day for day in versions_after if versions_after[day] != versions_before[day]}
    assert rewritten == {
        day for day in versions_before if (newest_day - day).days <= LOOKBACK_DAYS
    }


def insert_late_rows(pg) -> tuple[set, str]:
    """Insert late transactions, an inferred merchant and a fraud label.

    Each late row copies a loaded transaction under a new transaction_id and
    adds 1.00 to its amount, so it is a different payment. loaded_at takes its
    default, now(), so the rows are newer than every mart's last_loaded_at,
    while their event_time lies on the two oldest days or on a new day before
    them. Return the UTC days of the late rows and the inferred merchant's id.
    """
    first_day, second_day = (
        row[0]
        for row in fetch_all(
            pg,
            "select distinct (event_time at time zone 'UTC')::date as day"
            " from public.fact_transaction order by day limit 2",
        )
    )
    merchant_id = "late-merchant"
    copies = [
        ("late-1", first_day, "interval '0 days'", None),
        ("late-2", second_day, "interval '0 days'", None),
        ("late-3", first_day, "interval '1 day'", None),
        ("late-4", second_day, "interval '0 days'", merchant_id),
    ]
    with pg.cursor() as cursor:
        cursor.execute(
            "insert into public.dim_merchant (merchant_id, mcc, is_inferred)"
            " values (%s, '5411', true)",
            (merchant_id,),
        )
        for new_id, day, shift, new_merchant in copies:
            cursor.execute(
                "insert into public.fact_transaction ("
                " transaction_id, event_time, customer_id, card_id, merchant_id,"
                " amount, currency, channel, mcc, fraud_score, is_flagged,"
                " fraud_rules, kafka_topic, kafka_partition, kafka_offset,"
                " kafka_timestamp)"
                f" select %s, event_time - {shift}, customer_id, card_id,"
                " coalesce(%s, merchant_id), amount + 1.00, currency, channel,"
                " mcc, fraud_score, is_flagged, fraud_rules, kafka_topic,"
                " kafka_partition, kafka_offset + 1000000, kafka_timestamp"
                " from public.fact_transaction"
                " where (event_time at time zone 'UTC')::date = %s"
                "  and (event_time at time zone 'UTC')::time"
                "   between '01:00' and '23:00'"
                " order by transaction_id limit 1",
                (new_id, new_merchant, day),
            )
            assert cursor.rowcount == 1, new_id
        cursor.execute(
            "insert into public.fraud_label (transaction_id, scenario)"
            " values ('late-1', 'high_amount')"
        )
    late_days = {first_day, second_day, first_day - timedelta(days=1)}
    return late_days, merchant_id


def delete_late_rows(pg, merchant_id: str) -> None:
    with pg.cursor() as cursor:
        cursor.execute("delete from public.fraud_label where transaction_id like 'late-%'")
        cursor.execute("delete from public.fact_transaction where transaction_id like 'late-%'")
        cursor.execute("delete from public.dim_merchant where merchant_id = %s", (merchant_id,))


def test_late_rows_match_full_refresh(built_marts, pg, settings):
    versions_before = event_date_versions(pg, "daily_fraud_summary")
    late_days, merchant_id = insert_late_rows(pg)
    try:
        incremental = run_dbt(settings, "run")
        assert incremental.returncode == 0, incremental.stdout[-4000:]
        versions_after = event_date_versions(pg, "daily_fraud_summary")
        copy_marts(pg, "incremental_")
        unknown_location = fetch_all(
            pg,
            "select country_code, city, transaction_count"
            " from marts.merchant_location_sales where is_unknown_location",
        )

        full_refresh = run_dbt(settings, "run", "--full-refresh")
        assert full_refresh.returncode == 0, full_refresh.stdout[-4000:]
        differing_rows = {mart: count_differing_rows(pg, "incremental_", mart) for mart in MARTS}
    finally:
        delete_late_rows(pg, merchant_id)
        rebuild_marts(settings)

    assert differing_rows == {mart: 0 for mart in MARTS}
    # The incremental run rewrote the late rows' days and the lookback window,
    # and left the other days alone.
    newest_day = max(versions_before)
    lookback = {day for day in versions_before if (newest_day - day).days <= LOOKBACK_DAYS}
    rewritten = {day for day in versions_after if versions_after[day] != versions_before.get(day)}
    assert rewritten == late_days | lookback
    assert len(rewritten) < len(versions_after)
    # The inferred merchant's sale lands in the unknown member.
    assert unknown_location == [("ZZ", "Unknown", 1)]


def test_inferred_row_warns_then_fails(built_marts, pg, settings):
    customer_id = "inferred-customer"
    select = ("--select", "test_name:inferred_rows_resolved")
    with pg.cursor() as cursor:
        cursor.execute(
            "insert into public.dim_customer (customer_id, is_inferred) values (%s, true)",
            (customer_id,),
        )
    try:
        fresh = run_dbt(settings, "test", *select)
        fresh_statuses = dbt_test_statuses(settings)
        with pg.cursor() as cursor:
            cursor.execute(
                "update public.dim_customer set updated_at = now() - interval '2 days'"
                " where customer_id = %s",
                (customer_id,),
            )
        overdue = run_dbt(settings, "test", *select)
        overdue_statuses = dbt_test_statuses(settings)
    finally:
        with pg.cursor() as cursor:
            cursor.execute(
                "delete from public.dim_customer where customer_id = %s", (customer_id,)
            )

    # A row inferred a moment ago only warns.
    assert fresh.returncode == 0, fresh.stdout[-4000:]
    assert fresh_statuses["stg_dim_customer_inferred_rows_pending"] == "warn"
    assert fresh_statuses["stg_dim_customer_inferred_rows_overdue"] == "pass"
    # A row inferred two days ago, longer than the 1 day default, fails.
    assert overdue.returncode != 0
    assert overdue_statuses["stg_dim_customer_inferred_rows_pending"] == "warn"
    assert overdue_statuses["stg_dim_customer_inferred_rows_overdue"] == "fail"
    assert overdue_statuses["stg_dim_card_inferred_rows_overdue"] == "pass"


def test_source_freshness_passes(built_marts, settings):
    result = run_dbt(settings, "source", "freshness")
    assert result.returncode == 0, result.stdout[-4000:]
    sources = json.loads((dbt_target_dir(settings) / "sources.json").read_text())
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
        failed = failed_test_names(settings)
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
        failed = failed_test_names(settings)
    finally:
        with pg.cursor() as cursor:
            cursor.execute("delete from marts.daily_revenue where ctid = %s::tid", (row_id,))

    assert result.returncode != 0
    assert any(
        name.startswith("unique_combination_of_columns_daily_revenue") for name in failed
    ), failed
    assert "daily_revenue_matches_fact_amounts" in failed
