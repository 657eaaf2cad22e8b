"""The dashboard's questions: SQL over the dbt marts, one file each in sql/questions.

The Metabase provisioning (labkit.metabase), notebook 07 and the tests read the
same files, so a question's SQL has one source. Besides its SQL, a question
carries what Metabase needs to draw it: the chart type, the columns on its axes,
and the columns shown as money or as a share.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from importlib import resources

import pandas as pd
import psycopg2

from labkit.config import Settings


@dataclass(frozen=True)
class Question:
    """One dashboard question: its SQL and how Metabase displays the result."""

    name: str
    title: str
    description: str
    sql: str
    # Metabase's chart type ("line", "bar", "row", "table", ...).
    display: str = "table"
    # Columns on the x axis, the first one optionally followed by a series column.
    dimensions: tuple[str, ...] = ()
    # Columns drawn as values on the y axis.
    metrics: tuple[str, ...] = ()
    # Columns shown with two decimals, to the cent.
    money_columns: tuple[str, ...] = ()
    # Columns between 0 and 1 shown as percentages.
    share_columns: tuple[str, ...] = ()


# The dashboard's questions in the order the dashboard lays them out. Each name is
# the stem of a file in sql/questions.
_DEFINITIONS = (
    dict(
        name="daily_revenue_trend",
        title="Daily revenue trend",
        description="Revenue per UTC day, one line per currency.",
        display="line",
        dimensions=("event_day", "currency"),
        metrics=("revenue",),
        money_columns=("revenue", "flagged_amount"),
    ),
    dict(
        name="fraud_overview",
        title="Fraud overview",
        description="Transactions flagged by the streaming rules per UTC day, "
        "next to the labelled fraud among them.",
        display="bar",
        dimensions=("event_day",),
        metrics=("flagged_count", "labelled_fraud_count", "flagged_fraud_count"),
        share_columns=("flagged_share",),
    ),
    dict(
        name="flagged_transactions",
        title="Flagged transactions",
        description="The 500 most recent transactions that the streaming rules "
        "flagged, with their score, the rules that fired and the fraud label.",
        display="table",
        money_columns=("amount",),
    ),
    dict(
        name="customer_spending_distribution",
        title="Customer spending distribution",
        description="Customers per band of total spend. Amounts add up across "
        "currencies without conversion.",
        display="bar",
        dimensions=("spend_band",),
        metrics=("customer_count",),
        money_columns=("total_spend",),
    ),
    dict(
        name="merchant_sales_by_category",
        title="Merchant activity by category",
        description="Transactions and flags per merchant category code.",
        display="row",
        dimensions=("mcc_description",),
        metrics=("transaction_count", "flagged_count"),
        share_columns=("flagged_share",),
    ),
    dict(
        name="merchant_sales_by_location",
        title="Merchant sales by location",
        description="Sales per merchant country, in the country's currency.",
        display="bar",
        dimensions=("country_name", "currency"),
        metrics=("sales_amount",),
        money_columns=("sales_amount",),
        share_columns=("flagged_share",),
    ),
    dict(
        name="detection_quality",
        title="Detection quality",
        description="Precision and recall of the streaming rules' flags against "
        "the fraud labels, per UTC day with labels.",
        display="line",
        dimensions=("event_day",),
        metrics=("flag_precision", "flag_recall"),
        share_columns=("flag_precision", "flag_recall"),
    ),
)

QUESTION_NAMES = tuple(definition["name"] for definition in _DEFINITIONS)


def read_sql(name: str) -> str:
    """Return the SQL of the question name from sql/questions/<name>.sql.

    Raises KeyError for a name that no file has.
    """
    path = resources.files("labkit").joinpath("sql", "questions", f"{name}.sql")
    if not path.is_file():
        raise KeyError(f"no question named {name!r}; the questions are {', '.join(QUESTION_NAMES)}")
    return path.read_text()


def load(name: str) -> Question:
    """Return the dashboard question name with its SQL. Raises KeyError for an unknown name."""
    for definition in _DEFINITIONS:
        if definition["name"] == name:
            return Question(sql=read_sql(name), **definition)
    raise KeyError(f"no question named {name!r}; the questions are {', '.join(QUESTION_NAMES)}")


def load_all() -> list[Question]:
    """Return every dashboard question in layout order."""
    return [load(name) for name in QUESTION_NAMES]


def run(settings: Settings, question: Question | str) -> pd.DataFrame:
    """Run a question (or SQL text) as the read-only BI role and return its rows.

    The connection has the dashboard's privileges, so a query that reads past
    the marts fails with a permission error, as it would in Metabase.
    Numbers keep their PostgreSQL types (Decimal for numeric).
    """
    sql = question.sql if isinstance(question, Question) else question
    conn = psycopg2.connect(**settings.bi_connect_kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            columns = [column.name for column in cur.description]
            rows = cur.fetchall()
    finally:
        conn.close()
    return pd.DataFrame(rows, columns=columns)


# Revenue and flags per currency over all loaded transactions, from the raw fact
# table: the expected result of notebook 07's exercise.
_CURRENCY_TOTALS_SQL = """
select currency::text as currency, count(*) as transaction_count,
       sum(amount) as revenue, count(*) filter (where is_flagged) as flagged_count
from fact_transaction
group by currency
order by currency
"""


def check_currency_totals(settings: Settings, sql: object) -> None:
    """Check notebook 07's exercise: one row per currency with its totals over all days.

    The answer's SQL runs as the BI role, so it must read the marts only. Its
    rows must match the fact table's totals per currency. Raises AssertionError
    with a hint on a wrong answer, and prints a line that starts with "Correct:".
    """
    assert isinstance(sql, str) and sql.strip(), "currency_totals_sql must be a SQL string"
    try:
        answer = run(settings, sql)
    except psycopg2.errors.InsufficientPrivilege as error:
        raise AssertionError(
            f"The BI role may read the marts only: {error.diag.message_primary}. "
            "Read marts.daily_revenue instead of the raw tables."
        ) from None

    expected_columns = ["currency", "transaction_count", "revenue", "flagged_count"]
    missing = [column for column in expected_columns if column not in answer.columns]
    assert not missing, f"The answer lacks the columns {missing}; it has {list(answer.columns)}."
    assert answer["currency"].is_unique, "Each currency must appear in one row only."

    with psycopg2.connect(**settings.pg_connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(_CURRENCY_TOTALS_SQL)
        expected = {row[0]: row[1:] for row in cur.fetchall()}
    conn.close()
    assert expected, "The lab has no loaded transactions; run notebooks 01 and 02 first."

    found = {
        row.currency: (int(row.transaction_count), Decimal(str(row.revenue)),
                       int(row.flagged_count))
        for row in answer.itertuples(index=False)
    }
    assert set(found) == set(expected), (
        f"The answer has the currencies {sorted(found)}, the warehouse {sorted(expected)}."
    )
    for currency, (count, revenue, flagged) in expected.items():
        assert found[currency][0] == count, (
            f"{currency}: {found[currency][0]} transactions, expected {count}. "
            "Sum transaction_count over the days; counting the mart's rows counts days."
        )
        assert found[currency][1] == revenue, (
            f"{currency}: revenue {found[currency][1]}, expected {revenue} (to the cent)."
        )
        assert found[currency][2] == flagged, (
            f"{currency}: {found[currency][2]} flagged, expected {flagged}."
        )
    total = sum(count for count, _, _ in expected.values())
    print(
        f"Correct: {len(expected)} currencies and {total} transactions, equal to the "
        "fact table, read through the marts by the read-only role."
    )
