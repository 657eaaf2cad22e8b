"""Tests of the dashboard's questions and the read-only BI role, on the loaded lab.

dbt build runs once for the module. Each question's SQL then runs as the BI
role, the way Metabase runs it, and its totals are compared with the marts and
with public.fact_transaction, read by the lab's own role.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, time
from decimal import Decimal
from importlib import resources

import psycopg2
import pytest
from psycopg2 import errors, sql

from labkit import questions

from .dbt_helpers import MARTS, run_dbt

# PostgreSQL type oids of the result columns that the dashboard relies on.
TEXT_OID = 25
NUMERIC_OID = 1700
TIMESTAMPTZ_OID = 1184

# The columns each question returns, in order.
EXPECTED_COLUMNS = {
    "daily_revenue_trend": [
        "event_day", "currency", "transaction_count", "revenue", "flagged_count",
        "flagged_amount",
    ],
    "fraud_overview": [
        "event_day", "transaction_count", "flagged_count", "flagged_share",
        "labelled_fraud_count", "flagged_fraud_count",
    ],
    "flagged_transactions": [
        "event_time", "transaction_id", "card_id", "merchant", "amount", "currency",
        "fraud_score", "fired_rules", "is_labelled_fraud",
    ],
    "customer_spending_distribution": [
        "band_number", "spend_band", "customer_count", "total_spend", "flagged_count",
    ],
    "merchant_sales_by_category": [
        "mcc", "mcc_description", "risk_level", "transaction_count", "flagged_count",
        "flagged_share",
    ],
    "merchant_sales_by_location": [
        "country_code", "country_name", "currency", "merchant_count", "transaction_count",
        "sales_amount", "flagged_count", "flagged_share",
    ],
    "detection_quality": [
        "event_day", "transaction_count", "labelled_fraud_count", "flagged_count",
        "true_positive_count", "false_positive_count", "false_negative_count",
        "flag_precision", "flag_recall",
    ],
}

# Tables and views that the BI role must not read: the raw warehouse, dbt's
# staging views and seeds.
FORBIDDEN_RELATIONS = [
    "public.fact_transaction",
    "public.dim_customer",
    "public.dim_card",
    "public.dim_merchant",
    "public.fraud_label",
    "public.quarantine",
    "public.duplicate_message",
    "public.stream_batch",
    "staging.stg_fact_transaction",
    "analytics.countries",
]


class QuestionResult:
    """Rows and column metadata of one question, run as the BI role."""

    def __init__(self, cursor) -> None:
        self.columns = [column.name for column in cursor.description]
        self.type_codes = {column.name: column.type_code for column in cursor.description}
        self.rows = [dict(zip(self.columns, row, strict=True)) for row in cursor.fetchall()]

    def total(self, column: str):
        return sum(row[column] for row in self.rows)


def build_marts(settings) -> None:
    """Build the seeds, models and marts from scratch, with their grants to the BI role."""
    # The unit tests of an incremental mart read the mart's columns from the
    # warehouse, so after a reset the marts must exist, empty, before the build.
    for arguments in [
        ("run", "--empty", "--select", "+config.materialized:incremental"),
        ("build", "--full-refresh"),
    ]:
        result = run_dbt(settings, *arguments)
        if result.returncode != 0:
            pytest.fail(
                f"dbt {' '.join(arguments)} exited with {result.returncode}:\n"
                f"{result.stdout[-4000:]}"
            )


@pytest.fixture(scope="module")
def built_marts(loaded_lab, settings) -> None:
    """Build the marts once for the module."""
    build_marts(settings)


@pytest.fixture
def bi(built_marts, settings) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection as the read-only BI role."""
    conn = psycopg2.connect(**settings.bi_connect_kwargs())
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def run_question(bi):
    def run(name: str) -> QuestionResult:
        with bi.cursor() as cursor:
            cursor.execute(questions.load(name).sql)
            return QuestionResult(cursor)

    return run


def fetch_all(conn, query, params=()) -> list[tuple]:
    with conn.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


def utc_midnight(day) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


# --- the read-only role ---------------------------------------------------------------


@pytest.mark.parametrize("mart", MARTS)
def test_bi_role_reads_mart(bi, pg, mart):
    query = sql.SQL("select count(*) from {}").format(sql.Identifier("marts", mart))
    [(bi_count,)] = fetch_all(bi, query)
    [(lab_count,)] = fetch_all(pg, query)
    assert bi_count == lab_count
    assert bi_count > 0, f"marts.{mart} is empty"


@pytest.mark.parametrize("relation", FORBIDDEN_RELATIONS)
def test_bi_role_cannot_read_raw_relation(bi, relation):
    schema, table = relation.split(".")
    with pytest.raises(errors.InsufficientPrivilege):
        fetch_all(bi, sql.SQL("select * from {} limit 1").format(sql.Identifier(schema, table)))


def test_bi_role_transactions_start_read_only(bi):
    [(read_only,)] = fetch_all(bi, "show transaction_read_only")
    assert read_only == "on"
    with pytest.raises(errors.ReadOnlySqlTransaction):
        fetch_all(bi, "create temporary table scratch (id integer)")


@pytest.mark.parametrize(
    "statement",
    [
        "insert into marts.daily_fraud_summary (event_date, transaction_count,"
        " flagged_count, fraud_ratio, labelled_fraud_count, true_positive_count)"
        " values ('2000-01-01', 1, 0, 0, 0, 0)",
        "update marts.customer_kpis set total_spend = 0",
        "delete from marts.daily_revenue",
        "create table marts.bi_scratch (id integer)",
        "create table public.bi_scratch (id integer)",
        "insert into public.fact_transaction (transaction_id) values ('x')",
    ],
    ids=["insert-mart", "update-mart", "delete-mart", "create-in-marts", "create-in-public",
         "insert-fact"],
)
def test_bi_role_cannot_write_in_read_write_transaction(bi, statement):
    # A session may switch its transactions back to read-write, so the grants
    # alone must stop every write.
    with bi.cursor() as cursor:
        cursor.execute("set session characteristics as transaction read write")
        with pytest.raises(errors.InsufficientPrivilege):
            cursor.execute(statement)


def test_bi_role_has_no_privileged_attributes(pg, settings):
    rows = fetch_all(
        pg,
        "select rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication,"
        " rolbypassrls, rolcanlogin from pg_roles where rolname = %s",
        (settings.bi_user,),
    )
    assert len(rows) == 1, f"the role {settings.bi_user} does not exist"
    superuser, create_db, create_role, inherit, replication, bypass_rls, login = rows[0]
    assert not superuser
    assert not create_db
    assert not create_role
    assert not inherit
    assert not replication
    assert not bypass_rls
    assert login


# --- each question ----------------------------------------------------------------------


@pytest.mark.parametrize("name", questions.QUESTION_NAMES)
def test_question_returns_rows(run_question, name):
    assert run_question(name).rows, f"{name} returned no rows"


@pytest.mark.parametrize("name", questions.QUESTION_NAMES)
def test_question_columns(run_question, name):
    assert run_question(name).columns == EXPECTED_COLUMNS[name]


@pytest.mark.parametrize("name", questions.QUESTION_NAMES)
def test_question_column_types(run_question, name):
    question = questions.load(name)
    result = run_question(name)
    for column in ("event_day",):
        if column in result.columns:
            assert result.type_codes[column] == TIMESTAMPTZ_OID, f"{name}.{column}"
    for column in ("currency", "mcc", "country_code"):
        if column in result.columns:
            assert result.type_codes[column] == TEXT_OID, f"{name}.{column}"
    for column in question.money_columns:
        assert result.type_codes[column] == NUMERIC_OID, f"{name}.{column}"
        exponents = {row[column].as_tuple().exponent for row in result.rows}
        assert exponents == {-2}, f"{name}.{column} is not rounded to the cent: {exponents}"


@pytest.mark.parametrize("name", questions.QUESTION_NAMES)
def test_question_chart_columns_exist(name):
    question = questions.load(name)
    expected = EXPECTED_COLUMNS[name]
    charted = (*question.dimensions, *question.metrics, *question.money_columns,
               *question.share_columns)
    missing = [column for column in charted if column not in expected]
    assert not missing, f"{name} charts columns it does not return: {missing}"


@pytest.mark.parametrize("name", ["daily_revenue_trend", "fraud_overview", "detection_quality"])
def test_question_days_are_utc_midnights(run_question, name):
    for row in run_question(name).rows:
        day = row["event_day"]
        assert day.utcoffset() is not None, f"{name} returned a naive event_day {day}"
        assert day == utc_midnight(day.astimezone(UTC).date()), day


def test_daily_revenue_trend_matches_mart(run_question, pg):
    result = run_question("daily_revenue_trend")
    mart = {
        (utc_midnight(day), currency): (count, revenue, flagged_amount)
        for day, currency, count, revenue, flagged_amount in fetch_all(
            pg,
            "select event_date, currency, transaction_count, revenue, flagged_amount"
            " from marts.daily_revenue",
        )
    }
    found = {
        (row["event_day"], row["currency"]):
            (row["transaction_count"], row["revenue"], row["flagged_amount"])
        for row in result.rows
    }
    assert found == mart


def test_daily_revenue_trend_day_totals(run_question, pg):
    per_day = defaultdict(Decimal)
    for row in run_question("daily_revenue_trend").rows:
        per_day[row["event_day"]] += row["revenue"]
    fact = {
        utc_midnight(day): revenue
        for day, revenue in fetch_all(
            pg,
            "select (event_time at time zone 'UTC')::date, sum(amount)"
            " from public.fact_transaction group by 1",
        )
    }
    assert dict(per_day) == fact


def test_fraud_overview_counts_flagged_rows(run_question, pg):
    result = run_question("fraud_overview")
    [(flagged, labelled, flagged_fraud)] = fetch_all(
        pg,
        "select count(*) filter (where is_flagged), count(fraud_label.transaction_id),"
        " count(fraud_label.transaction_id) filter (where is_flagged)"
        " from public.fact_transaction left join public.fraud_label using (transaction_id)",
    )
    assert flagged > 0, "the lab's rules flagged nothing"
    assert result.total("flagged_count") == flagged
    assert result.total("labelled_fraud_count") == labelled
    assert result.total("flagged_fraud_count") == flagged_fraud


def test_flagged_transactions_are_the_newest_flags(run_question, pg):
    result = run_question("flagged_transactions")
    newest = fetch_all(
        pg,
        "select transaction_id from public.fact_transaction where is_flagged"
        " order by event_time desc, transaction_id limit 500",
    )

    assert len(newest) > 0, "the lab's rules flagged nothing"
    assert [row["transaction_id"] for row in result.rows] == [row[0] for row in newest]
    assert all(row["fraud_score"] >= Decimal("0.5") for row in result.rows)
    assert all(row["fired_rules"] for row in result.rows)


def test_fraud_overview_matches_mart(run_question, pg):
    found = {
        row["event_day"]: (row["transaction_count"], row["flagged_count"], row["flagged_share"])
        for row in run_question("fraud_overview").rows
    }
    mart = {
        utc_midnight(day): (count, flagged, share)
        for day, count, flagged, share in fetch_all(
            pg,
            "select event_date, transaction_count, flagged_count, fraud_ratio"
            " from marts.daily_fraud_summary",
        )
    }
    assert found == mart


def test_customer_spending_distribution_totals(run_question, pg):
    result = run_question("customer_spending_distribution")
    [(customers, spend, flagged)] = fetch_all(
        pg, "select count(*), sum(total_spend), sum(flagged_count) from marts.customer_kpis"
    )
    assert result.total("customer_count") == customers
    assert result.total("total_spend") == spend
    assert result.total("flagged_count") == flagged


def test_customer_spending_distribution_bands(run_question, pg):
    result = run_question("customer_spending_distribution")
    assert [row["band_number"] for row in result.rows] == [1, 2, 3, 4, 5, 6]
    bounds = [(0, 100), (100, 250), (250, 500), (500, 1000), (1000, 2500), (2500, None)]
    for row, (lower, upper) in zip(result.rows, bounds, strict=True):
        [(expected,)] = fetch_all(
            pg,
            "select count(*) from marts.customer_kpis"
            " where total_spend >= %s and (%s::numeric is null or total_spend < %s)",
            (lower, upper, upper),
        )
        assert row["customer_count"] == expected, row["spend_band"]


def test_merchant_sales_by_category_matches_mart(run_question, pg):
    found = {
        row["mcc"]: (row["transaction_count"], row["flagged_count"])
        for row in run_question("merchant_sales_by_category").rows
    }
    mart = {
        mcc: (count, flagged)
        for mcc, count, flagged in fetch_all(
            pg,
            "select mcc, sum(transaction_count), sum(flagged_count)"
            " from marts.merchant_category_sales group by mcc",
        )
    }
    assert found == mart


def test_merchant_sales_by_category_shares(run_question):
    for row in run_question("merchant_sales_by_category").rows:
        expected = round(Decimal(row["flagged_count"]) / row["transaction_count"], 4)
        assert row["flagged_share"] == expected, row["mcc"]


def test_merchant_sales_by_location_totals(run_question, pg):
    result = run_question("merchant_sales_by_location")
    per_currency = defaultdict(lambda: [0, Decimal(0), 0])
    for row in result.rows:
        totals = per_currency[row["currency"]]
        totals[0] += row["transaction_count"]
        totals[1] += row["sales_amount"]
        totals[2] += row["flagged_count"]
    mart = {
        currency: [count, revenue, flagged]
        for currency, count, revenue, flagged in fetch_all(
            pg,
            "select currency, sum(transaction_count), sum(revenue), sum(flagged_count)"
            " from marts.daily_revenue group by currency",
        )
    }
    assert dict(per_currency) == mart


def test_merchant_sales_by_location_matches_mart(run_question, pg):
    found = {
        (row["country_code"], row["currency"]): row["sales_amount"]
        for row in run_question("merchant_sales_by_location").rows
    }
    mart = dict(
        ((country, currency), amount)
        for country, currency, amount in fetch_all(
            pg,
            "select country_code, currency, sum(sales_amount)"
            " from marts.merchant_location_sales group by country_code, currency",
        )
    )
    assert found == mart


def test_detection_quality_covers_labelled_days(run_question, pg):
    result = run_question("detection_quality")
    labelled_days = [
        utc_midnight(day)
        for (day,) in fetch_all(
            pg,
            "select event_date from marts.daily_fraud_summary"
            " where labelled_fraud_count > 0 order by event_date",
        )
    ]
    assert [row["event_day"] for row in result.rows] == labelled_days


def test_detection_quality_sums_to_overall(run_question, pg):
    result = run_question("detection_quality")
    [(labelled, true_positives)] = fetch_all(
        pg,
        "select labelled_fraud_count, true_positive_count from marts.detection_quality"
        " where period_type = 'overall'",
    )
    assert labelled > 0, "the lab has no fraud labels"
    assert result.total("labelled_fraud_count") == labelled
    assert result.total("true_positive_count") == true_positives


# --- the loader and notebook 07's self-check --------------------------------------------


def test_every_question_file_is_defined():
    folder = resources.files("labkit").joinpath("sql", "questions")
    files = sorted(path.name.removesuffix(".sql") for path in folder.iterdir()
                   if path.name.endswith(".sql"))
    assert files == sorted(questions.QUESTION_NAMES)


def test_load_unknown_question():
    with pytest.raises(KeyError, match="no question named 'revenue'"):
        questions.load("revenue")


def test_question_titles_unique():
    titles = [question.title for question in questions.load_all()]
    assert len(set(titles)) == len(titles)


CURRENCY_TOTALS_SQL = """
select currency, sum(transaction_count) as transaction_count, sum(revenue) as revenue,
       sum(flagged_count) as flagged_count
from marts.daily_revenue
group by currency
"""


def test_check_currency_totals_accepts_answer(built_marts, settings, capsys):
    questions.check_currency_totals(settings, CURRENCY_TOTALS_SQL)
    assert capsys.readouterr().out.startswith("Correct:")


@pytest.mark.parametrize(
    "answer, message",
    [
        (CURRENCY_TOTALS_SQL.replace("sum(transaction_count)", "count(*)"), "transactions"),
        (CURRENCY_TOTALS_SQL.replace("sum(revenue)", "round(sum(revenue))"), "revenue"),
        ("select currency, count(*) as transaction_count, sum(amount) as revenue,"
         " 0 as flagged_count from fact_transaction group by currency", "marts only"),
        ("select currency, sum(revenue) as revenue from marts.daily_revenue group by currency",
         "lacks the columns"),
    ],
    ids=["rows-counted", "rounded", "raw-table", "missing-column"],
)
def test_check_currency_totals_rejects_wrong_answer(built_marts, settings, answer, message):
    with pytest.raises(AssertionError, match=message):
        questions.check_currency_totals(settings, answer)
