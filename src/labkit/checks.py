"""Self-checks for the notebooks' exercises.

Each check recomputes the expected answer from the running lab (Kafka or
PostgreSQL), or from the DAG that Airflow parsed, instead of comparing with a
stored number, so it holds for any transaction count. A wrong answer raises AssertionError with a hint, and a right
one prints a line that starts with "Correct:".
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from labkit import dbt_runner, warehouse
from labkit.config import Settings
from labkit.rules import DEFAULT_RULES, Rule, apply_rules

# The rule that notebook 02's exercise requires, written as a condition that
# Spark SQL and PostgreSQL both accept.
BIG_CARD_PRESENT_CONDITION = "channel = 'card_present' and amount >= 1000"

# Columns a rule may use: the typed columns of a validated transaction and the
# features the stateful rules read, as the stream stored them.
_RULE_INPUT_SQL = """
select transaction_id, event_time, customer_id, card_id, merchant_id, amount,
       currency, channel, mcc, card_payments_10m, card_prior_payments, card_mean_amount,
       travel_km, travel_kmh, terminal_confirmed_frauds
from fact_transaction
order by transaction_id
"""
_RULE_INPUT_SCHEMA = (
    "transaction_id string, event_time timestamp, customer_id string, card_id string, "
    "merchant_id string, amount decimal(12,2), currency string, channel string, mcc string, "
    "card_payments_10m int, card_prior_payments int, card_mean_amount decimal(12,2), "
    "travel_km decimal(9,1), travel_kmh decimal(10,1), terminal_confirmed_frauds int"
)
# The scenario that notebook 06's exercise must catch more of.
EXERCISE_SCENARIO = "s4_card_testing"

_FIRST_DAY_SQL = "select min((event_time at time zone 'UTC')::date) as day from fact_transaction"

# Revenue per merchant country on one UTC day. The generator gives each merchant
# its country's currency, so each row sums one currency. Should a message break
# that, the currency column lists every currency of the row.
_REVENUE_BY_COUNTRY_SQL = """
select m.country_code, string_agg(distinct f.currency, '/' order by f.currency) as currency,
       sum(f.amount) as revenue
from fact_transaction as f
join dim_merchant as m on m.merchant_id = f.merchant_id
where (f.event_time at time zone 'UTC')::date = %s
group by m.country_code
order by m.country_code
"""


def check_partition_count(settings: Settings, partition_count: object) -> None:
    """Check the number of partitions of the lab's topic, as the broker describes it."""
    assert isinstance(partition_count, int) and not isinstance(partition_count, bool), (
        f"partition_count must be a whole number, got {partition_count!r} "
        f"of type {type(partition_count).__name__}"
    )
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    try:
        description = admin.describe_topics([settings.topic])[0]
    finally:
        admin.close()
    expected = len(description["partitions"])

    assert partition_count == expected, (
        f"The topic {settings.topic} has {expected} partitions, not {partition_count}. "
        "Ask the broker: KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)"
        ".partitions_for_topic(settings.topic) returns the set of partition numbers."
    )
    print(
        f"Correct: {settings.topic} has {expected} partitions, so up to {expected} consumers "
        "of one consumer group can read it in parallel."
    )


def read_first_card_ids(
    settings: Settings, partition: int, count: int, timeout: float = 15.0
) -> list[tuple[int, str | None]]:
    """Return (offset, card_id) of the first count messages of one partition.

    card_id is None where a message value is not a JSON object. Raises
    TimeoutError when the partition still has fewer than count messages after
    timeout seconds.
    """
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    topic_partition = TopicPartition(settings.topic, partition)
    try:
        consumer.assign([topic_partition])
        consumer.seek_to_beginning(topic_partition)
        records = []
        deadline = time.monotonic() + timeout
        while len(records) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"partition {partition} of {settings.topic} returned {len(records)} "
                    f"messages within {timeout:.0f} s, fewer than {count}"
                )
            batch = consumer.poll(timeout_ms=1000, max_records=count - len(records))
            records.extend(batch.get(topic_partition, []))
    finally:
        consumer.close()
    return [(record.offset, _card_id(record.value)) for record in records]


def _card_id(value: bytes | None) -> str | None:
    try:
        message = json.loads(value)
    except (TypeError, ValueError):
        return None
    return message.get("card_id") if isinstance(message, dict) else None


def check_first_card_ids(
    settings: Settings, partition: int, card_ids: Sequence[str], count: int = 5
) -> None:
    """Check the card ids of the first count messages of one partition, in offset order."""
    if count < 1:
        raise ValueError(f"count must be 1 or more, got {count}")
    assert not isinstance(card_ids, str), (
        "card_ids must be a list of card ids such as ['card_000001', ...], not one string"
    )
    answer = list(card_ids)
    assert len(answer) == count, f"Give {count} card ids, one per message; you gave {len(answer)}."

    first = read_first_card_ids(settings, partition, count)
    expected = [card_id for _, card_id in first]
    assert answer == expected, (
        f"The first {count} messages of partition {partition} carry the card ids {expected}, "
        f"but your answer is {answer}. Read the partition from its beginning offset "
        "(assign it, then seek_to_beginning) and keep the messages in offset order."
    )
    print(
        f"Correct: offsets {first[0][0]} to {first[-1][0]} of partition {partition} are "
        f"payments with the cards {', '.join(map(str, expected))}."
    )


def check_rule_fire_count(
    spark: SparkSession, settings: Settings, rule: Rule, fire_count: object
) -> None:
    """Check the exercise's rule (card_present payments of 1000 or more) and its SQL count.

    The rule's condition is evaluated with Spark, as the streaming query would,
    over the transactions already in fact_transaction.
    """
    assert isinstance(rule, Rule), (
        f"rule must be a labkit.rules.Rule, got {type(rule).__name__}"
    )
    expected = _sql_count(settings, BIG_CARD_PRESENT_CONDITION)
    facts = _fetch_rows(settings, _RULE_INPUT_SQL)
    frame = spark.createDataFrame(facts, _RULE_INPUT_SCHEMA)
    try:
        rule_count = frame.where(rule.column()).count()
    except PySparkException as error:
        raise AssertionError(
            f"Spark cannot evaluate the condition {rule.condition!r}: "
            f"{str(error).splitlines()[0]}"
        ) from None

    assert rule_count == expected, (
        f"Your rule {rule.name!r} fires on {rule_count} loaded transactions, but "
        f"{expected} are card_present payments of 1000 or more. Check the channel name "
        "(card_present) and that a payment of exactly 1000 counts (>=)."
    )
    assert isinstance(fire_count, int) and not isinstance(fire_count, bool), (
        f"fire_count must be a whole number, got {fire_count!r} of type "
        f"{type(fire_count).__name__}; int(...) converts a value read from a DataFrame."
    )
    assert fire_count == expected, (
        f"Your count is {fire_count}, but fact_transaction holds {expected} card_present "
        "payments of 1000 or more. Count with: select count(*) from fact_transaction "
        "where <your rule's condition>."
    )
    print(
        f"Correct: {rule.name!r} would fire on {expected} of the {len(facts)} loaded transactions."
    )


def score_loaded(
    spark: SparkSession, settings: Settings, rules: Sequence[Rule]
) -> pd.DataFrame:
    """Apply rules with Spark to the loaded transactions and return them for labkit.metrics.

    The stream stored each transaction's features, so any set of rules can be
    tried on the loaded data without streaming it again. The frame has the
    columns of metrics.SCORED_COLUMNS plus fraud_rules.
    """
    frame = spark.createDataFrame(_fetch_rows(settings, _RULE_INPUT_SQL), _RULE_INPUT_SCHEMA)
    try:
        scored = apply_rules(frame, rules).select(
            "transaction_id", "card_id", F.unix_micros("event_time").alias("micros"),
            F.col("fraud_score").cast("double").alias("score"),
            F.col("is_flagged").alias("flagged"), "fraud_rules",
        ).toPandas()
    except PySparkException as error:
        raise AssertionError(
            f"Spark cannot apply these rules: {str(error).splitlines()[0]}"
        ) from None
    labels = warehouse.query(settings, "select transaction_id, scenario from fraud_label")
    scored = scored.merge(labels, on="transaction_id", how="left")
    scored["event_time"] = pd.to_datetime(scored.pop("micros"), unit="us", utc=True)
    scored["is_fraud"] = scored["scenario"].notna()
    return scored


def check_added_rule(spark: SparkSession, settings: Settings, rule: object) -> None:
    """Check notebook 06's exercise: with rule added, recall on card testing rises.

    Precision must not collapse: it may drop to no less than 90% of what the
    default rules reach.
    """
    assert isinstance(rule, Rule), f"rule must be a labkit.rules.Rule, got {type(rule).__name__}"
    assert rule.name not in {known.name for known in DEFAULT_RULES}, (
        f"{rule.name!r} is already a default rule: give your rule a name of its own"
    )
    before = score_loaded(spark, settings, DEFAULT_RULES)
    after = score_loaded(spark, settings, (*DEFAULT_RULES, rule))
    scenario = before["scenario"] == EXERCISE_SCENARIO
    assert scenario.any(), (
        f"the loaded data has no {EXERCISE_SCENARIO} transactions: run the notebook from the top"
    )

    def recall(scored: pd.DataFrame) -> float:
        return float(scored.loc[scenario, "flagged"].mean())

    def precision(scored: pd.DataFrame) -> float:
        flagged = scored["flagged"]
        return float((flagged & scored["is_fraud"]).sum() / max(int(flagged.sum()), 1))

    assert recall(after) > recall(before), (
        f"With {rule.name!r}, recall on {EXERCISE_SCENARIO} stays at {recall(after):.3f}. "
        "A burst's first payments have card_payments_10m of 1, 2 or 3, and their amounts are "
        "small; does your rule fire on them, and is its weight enough to flag (0.5)?"
    )
    assert precision(after) >= 0.9 * precision(before), (
        f"Precision fell from {precision(before):.3f} to {precision(after):.3f}: your rule "
        "flags many honest payments. Narrow its condition."
    )
    print(
        f"Correct: recall on {EXERCISE_SCENARIO} rose from {recall(before):.3f} to "
        f"{recall(after):.3f}; precision went from {precision(before):.3f} to "
        f"{precision(after):.3f}."
    )


def _fetch_rows(settings: Settings, sql: str) -> list[tuple]:
    # psycopg2 returns plain Python values (datetime, Decimal), which
    # createDataFrame accepts. It rejects the pandas Timestamp of warehouse.query.
    with warehouse.connect(settings) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    conn.close()
    return rows


def _sql_count(settings: Settings, condition: str) -> int:
    sql = f"select count(*) as n from fact_transaction where {condition}"
    frame = warehouse.query(settings, sql)
    return int(frame["n"].iloc[0])


def first_day(settings: Settings) -> date | None:
    """Return the UTC date of the earliest loaded transaction, None when none is loaded."""
    return warehouse.query(settings, _FIRST_DAY_SQL)["day"].iloc[0]


def revenue_by_country(settings: Settings, day: date) -> pd.DataFrame:
    """Return country_code, currency and revenue per merchant country on one UTC day."""
    return warehouse.query(settings, _REVENUE_BY_COUNTRY_SQL, (day,))


def check_revenue_by_country(settings: Settings, answer: pd.DataFrame) -> None:
    """Check a DataFrame of revenue per merchant country on the first day against the reference."""
    assert isinstance(answer, pd.DataFrame), (
        f"answer must be a pandas DataFrame, got {type(answer).__name__}; "
        "warehouse.query(settings, sql) returns one"
    )
    missing = {"country_code", "revenue"} - set(answer.columns)
    assert not missing, (
        f"The DataFrame needs the columns country_code and revenue (use 'as revenue'); "
        f"missing {sorted(missing)}, found {list(answer.columns)}"
    )

    day = first_day(settings)
    assert day is not None, (
        "fact_transaction is empty: run notebooks 01 and 02 to load transactions first"
    )
    expected = revenue_by_country(settings, day)
    expected_by_country = dict(zip(expected["country_code"], expected["revenue"], strict=True))
    assert answer["country_code"].is_unique, (
        "Each country_code must appear once: group by the merchant's country_code."
    )
    answer_by_country = {
        code: _cents(value, code)
        for code, value in zip(answer["country_code"], answer["revenue"], strict=True)
    }

    missing_countries = sorted(set(expected_by_country) - set(answer_by_country))
    extra_countries = sorted(set(answer_by_country) - set(expected_by_country))
    country_hint = (
        "Join fact_transaction to dim_merchant on merchant_id and use the merchant's "
        f"country_code, not the customer's, on {day} (UTC) only."
    )
    assert not missing_countries, (
        f"Countries missing from your answer: {missing_countries}. {country_hint}"
    )
    assert not extra_countries, (
        f"Countries that should not be in your answer: {extra_countries}. {country_hint}"
    )
    for code, revenue in expected_by_country.items():
        assert answer_by_country[code] == revenue, (
            f"Revenue for {code} should be {revenue}, your answer has {answer_by_country[code]}. "
            "Keep only the first day in UTC, for example "
            f"(event_time at time zone 'UTC')::date = date '{day}', and sum amount."
        )

    top = expected.sort_values(["revenue", "country_code"], ascending=[False, True]).iloc[0]
    print(
        f"Correct: merchants in {len(expected)} countries had payments on {day}; "
        f"the largest revenue is {top['revenue']} {top['currency']} in {top['country_code']}."
    )


def _cents(value: object, country_code: str) -> Decimal:
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise AssertionError(
            f"The revenue of {country_code} is {value!r}, which is not a number"
        ) from None


# The unrounded average amount per UTC day and currency, the reference for
# notebook 04's exercise.
_DAILY_AVERAGE_AMOUNT_SQL = """
select (event_time at time zone 'UTC')::date as event_date, currency::text as currency,
       avg(amount) as average_amount
from fact_transaction
group by 1, 2
order by 1, 2
"""

# An answer may round the average to whole cents, so it may be off by half a cent.
_HALF_A_CENT = Decimal("0.005")


def check_daily_average_amount(settings: Settings, model_sql: object) -> None:
    """Check a dbt model of the average amount per UTC day and currency.

    The model's SQL runs through `dbt show --inline`, so ref() and source()
    work in it, and its rows are compared with a reference query on
    public.fact_transaction. The model must return event_date, currency and
    average_amount.
    """
    assert isinstance(model_sql, str) and model_sql.strip(), (
        "model_sql must be the SQL of your model as a string, such as "
        "\"select ... from {{ ref('daily_revenue') }}\""
    )
    try:
        answer = dbt_runner.show(settings, model_sql)
    except dbt_runner.DbtError as error:
        raise AssertionError(
            "dbt could not compile or run your model. Its message ends with:\n"
            + "\n".join(str(error).strip().splitlines()[-6:])
        ) from None

    expected_columns = {"event_date", "currency", "average_amount"}
    missing = sorted(expected_columns - set(answer.columns))
    assert not missing, (
        f"Your model must return the columns event_date, currency and average_amount. "
        f"Missing: {missing}, found: {list(answer.columns)}. Name a column with 'as'."
    )

    expected = warehouse.query(settings, _DAILY_AVERAGE_AMOUNT_SQL)
    assert not expected.empty, (
        "fact_transaction is empty: run notebooks 01 and 02 to load transactions first"
    )
    expected_by_key = {
        (str(day), currency): Decimal(value)
        for day, currency, value in expected.itertuples(index=False)
    }
    answer_keys = [
        (str(day), str(currency)) for day, currency in zip(answer["event_date"], answer["currency"])
    ]
    assert len(set(answer_keys)) == len(answer_keys), (
        "Each (event_date, currency) pair must appear once: group by event_date and currency."
    )

    missing_keys = sorted(set(expected_by_key) - set(answer_keys))
    extra_keys = sorted(set(answer_keys) - set(expected_by_key))
    assert not missing_keys, (
        f"Your model has no row for {len(missing_keys)} (event_date, currency) pairs, such as "
        f"{missing_keys[0]}. Keep every day and currency of stg_fact_transaction or daily_revenue."
    )
    assert not extra_keys, (
        f"Your model has rows that no loaded transaction belongs to, such as {extra_keys[0]}. "
        "event_date is the UTC day of event_time, as in stg_fact_transaction."
    )

    for key, value in zip(answer_keys, answer["average_amount"], strict=True):
        answer_value = _decimal_or_none(value)
        assert answer_value is not None, (
            f"average_amount of {key} is {value!r}, which is not a number"
        )
        assert abs(answer_value - expected_by_key[key]) <= _HALF_A_CENT, (
            f"average_amount of {key} should be {expected_by_key[key]:.2f}, your model has "
            f"{value}. The average is the revenue divided by the number of transactions of "
            "that day and currency, or avg(amount)."
        )

    days = sorted({day for day, _ in expected_by_key})
    print(
        f"Correct: {len(expected_by_key)} rows, one per UTC day and currency, "
        f"from {days[0]} to {days[-1]}."
    )


def _decimal_or_none(value: object) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


# A dbt command whose subcommand runs data tests: "dbt test", or "dbt build",
# which runs them after each model.
_DBT_TEST_COMMAND = re.compile(r"(?:^|[\s/])dbt\s+(?:test|build)(?:\s|$)")


def expected_states_after_failed_test(dag: Any) -> dict[str, str]:
    """Return the final state of each task of a run in which a dbt data test fails.

    dag is an Airflow DAG, as DagBag.get_dag returns it. The task whose bash
    command runs `dbt test` (or `dbt build`) fails, the tasks it depends on
    succeed, and each task after it whose trigger rule is all_success ends
    in upstream_failed without running. Tasks that are neither before nor
    after it are assumed to succeed. Raises ValueError when the DAG has no such task, more
    than one, or a downstream task with another trigger rule.
    """
    testing = [
        task for task in dag.tasks if _DBT_TEST_COMMAND.search(getattr(task, "bash_command", ""))
    ]
    if len(testing) != 1:
        raise ValueError(
            f"expected one task that runs dbt test or dbt build in {dag.dag_id}, found "
            f"{[task.task_id for task in testing]}"
        )
    failing = testing[0]
    downstream = failing.get_flat_relative_ids(upstream=False)

    states = {}
    for task in dag.tasks:
        if task.task_id == failing.task_id:
            states[task.task_id] = "failed"
        elif task.task_id in downstream:
            rule = getattr(task.trigger_rule, "value", task.trigger_rule)
            if rule != "all_success":
                raise ValueError(
                    f"{task.task_id} has the trigger rule {rule}, but only all_success "
                    "can be predicted"
                )
            states[task.task_id] = "upstream_failed"
        else:
            states[task.task_id] = "success"
    return states


def check_states_after_failed_test(dag: Any, states: object) -> None:
    """Check the predicted final task states of a run of dag in which a dbt test fails.

    states maps each task_id to a state name such as "success". The expected
    states come from the DAG's dependencies and trigger rules
    (expected_states_after_failed_test).
    """
    assert isinstance(states, dict), (
        f"states must be a dict of task_id to state, such as {{'summarize': 'success'}}, "
        f"got {type(states).__name__}"
    )
    expected = expected_states_after_failed_test(dag)
    answer = {task_id: str(getattr(state, "value", state)) for task_id, state in states.items()}

    missing = [task_id for task_id in expected if task_id not in answer]
    unknown = sorted(set(answer) - set(expected))
    assert not missing, f"Give a state for every task of {dag.dag_id}. Missing: {missing}."
    assert not unknown, (
        f"{dag.dag_id} has no tasks named {unknown}. Its tasks are {list(expected)}."
    )

    failing = next(task_id for task_id, state in expected.items() if state == "failed")
    hints = {
        "success": (
            f"It does not depend on {failing}, so it runs and succeeds as usual."
        ),
        "failed": (
            "It runs the dbt data tests. dbt exits with code 1 when one of them fails, and "
            "the BashOperator fails the task on any non-zero exit code."
        ),
        "upstream_failed": (
            f"Its trigger rule all_success needs every upstream task to succeed. {failing} "
            "failed, so Airflow never starts this task and marks it upstream_failed."
        ),
    }
    for task_id, state in expected.items():
        assert answer[task_id] == state, (
            f"{task_id} ends in {state!r}, not {answer[task_id]!r}. {hints[state]}"
        )

    stopped = [task_id for task_id, state in expected.items() if state == "upstream_failed"]
    print(
        f"Correct: {failing} fails, and {', '.join(stopped) or 'no later task'} never runs, "
        "so nothing after the tests reports on data that failed them."
    )
