"""The notebooks' self-checks accept a right answer and raise AssertionError on a wrong one."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pandas as pd
import pytest

from labkit import airflow_service, checks, config, dbt_runner, warehouse
from labkit.rules import Rule

BIG_CARD_PRESENT = Rule(
    name="big_card_present",
    condition="channel = 'card_present' and amount >= 1000",
    weight=0.3,
    description="a card-present payment of 1000 or more",
)

# The exercise's answer, written differently from the reference query in
# labkit.checks: a timestamp range instead of a date cast.
REVENUE_BY_MERCHANT_COUNTRY = """
select m.country_code, f.currency, sum(f.amount) as revenue
from fact_transaction as f
join dim_merchant as m on m.merchant_id = f.merchant_id
where f.event_time >= timestamptz '2018-04-01 00:00:00+00'
  and f.event_time < timestamptz '2018-04-02 00:00:00+00'
group by m.country_code, f.currency
order by m.country_code
"""


def count_rows(pg, sql: str) -> int:
    with pg.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


# check_partition_count


def test_partition_count_right(lab_running, capsys):
    checks.check_partition_count(lab_running, lab_running.topic_partitions)

    assert capsys.readouterr().out.startswith("Correct:")


def test_partition_count_wrong(lab_running):
    with pytest.raises(AssertionError, match="partitions, not"):
        checks.check_partition_count(lab_running, lab_running.topic_partitions + 1)


@pytest.mark.parametrize("answer", ["3", 3.0, True, None])
def test_partition_count_not_an_int(lab_running, answer):
    with pytest.raises(AssertionError, match="whole number"):
        checks.check_partition_count(lab_running, answer)


# check_first_card_ids


def first_loaded_cards(pg, topic: str, partition: int) -> list[str]:
    """Return the card ids of the first 5 loaded offsets of a partition, read from PostgreSQL."""
    with pg.cursor() as cur:
        cur.execute(
            "select card_id from fact_transaction where kafka_topic = %s and kafka_partition = %s "
            "order by kafka_offset limit 5",
            (topic, partition),
        )
        return [row[0] for row in cur.fetchall()]


@pytest.fixture
def first_cards_of_partition_0(loaded_lab, pg) -> list[str]:
    return first_loaded_cards(pg, loaded_lab.topic, 0)


def test_first_card_ids_right(loaded_lab, first_cards_of_partition_0, capsys):
    checks.check_first_card_ids(loaded_lab, partition=0, card_ids=first_cards_of_partition_0)

    output = capsys.readouterr().out
    assert output.startswith("Correct:")
    assert first_cards_of_partition_0[0] in output


def test_first_card_ids_accept_series(loaded_lab, first_cards_of_partition_0):
    checks.check_first_card_ids(
        loaded_lab, partition=0, card_ids=pd.Series(first_cards_of_partition_0)
    )


def test_first_card_ids_wrong_order(loaded_lab, first_cards_of_partition_0):
    reversed_cards = first_cards_of_partition_0[::-1]
    assert reversed_cards != first_cards_of_partition_0, "the first 5 cards are a palindrome"

    with pytest.raises(AssertionError, match="offset order"):
        checks.check_first_card_ids(loaded_lab, partition=0, card_ids=reversed_cards)


def test_first_card_ids_other_partition(loaded_lab, first_cards_of_partition_0, pg):
    partition_1_cards = first_loaded_cards(pg, loaded_lab.topic, 1)
    assert partition_1_cards != first_cards_of_partition_0, "partitions 0 and 1 start alike"

    with pytest.raises(AssertionError, match="partition 0"):
        checks.check_first_card_ids(loaded_lab, partition=0, card_ids=partition_1_cards)


def test_first_card_ids_wrong_length(loaded_lab, first_cards_of_partition_0):
    with pytest.raises(AssertionError, match="Give 5 card ids"):
        checks.check_first_card_ids(
            loaded_lab, partition=0, card_ids=first_cards_of_partition_0[:4]
        )


def test_first_card_ids_one_string(loaded_lab, first_cards_of_partition_0):
    with pytest.raises(AssertionError, match="not one string"):
        checks.check_first_card_ids(
            loaded_lab, partition=0, card_ids=first_cards_of_partition_0[0]
        )


# check_rule_fire_count


@pytest.fixture
def big_card_present_count(pg) -> int:
    return count_rows(
        pg,
        "select count(*) from fact_transaction where channel = 'card_present' and amount >= 1000",
    )


def test_rule_fire_count_right(loaded_lab, spark, big_card_present_count, capsys):
    checks.check_rule_fire_count(spark, loaded_lab, BIG_CARD_PRESENT, big_card_present_count)

    output = capsys.readouterr().out
    assert output.startswith("Correct:")
    assert f"fire on {big_card_present_count} of" in output


def test_rule_fire_count_equivalent_condition(loaded_lab, spark, big_card_present_count):
    # Spark SQL syntax that PostgreSQL would reject, with the same meaning.
    rule = dataclasses.replace(
        BIG_CARD_PRESENT, condition="NOT (amount < 1000) AND channel == 'card_present'"
    )

    checks.check_rule_fire_count(spark, loaded_lab, rule, big_card_present_count)


def test_rule_fire_count_wrong_count(loaded_lab, spark, big_card_present_count):
    with pytest.raises(AssertionError, match="Your count is"):
        checks.check_rule_fire_count(
            spark, loaded_lab, BIG_CARD_PRESENT, big_card_present_count + 1
        )


def test_rule_fire_count_wrong_rule(loaded_lab, spark, pg, big_card_present_count):
    online = dataclasses.replace(
        BIG_CARD_PRESENT, condition="channel = 'ecommerce' and amount >= 1000"
    )
    online_count = count_rows(
        pg, "select count(*) from fact_transaction where channel = 'ecommerce' and amount >= 1000"
    )
    assert online_count != big_card_present_count, "the data cannot tell the two rules apart"

    with pytest.raises(AssertionError, match="fires on"):
        checks.check_rule_fire_count(spark, loaded_lab, online, online_count)


def test_rule_fire_count_invalid_condition(loaded_lab, spark, big_card_present_count):
    rule = dataclasses.replace(BIG_CARD_PRESENT, condition="amount >>>= 1000")

    with pytest.raises(AssertionError, match="Spark cannot evaluate"):
        checks.check_rule_fire_count(spark, loaded_lab, rule, big_card_present_count)


def test_rule_fire_count_not_a_rule(loaded_lab, spark, big_card_present_count):
    with pytest.raises(AssertionError, match="labkit.rules.Rule"):
        checks.check_rule_fire_count(
            spark, loaded_lab, BIG_CARD_PRESENT.condition, big_card_present_count
        )


def test_rule_fire_count_not_an_int(loaded_lab, spark, big_card_present_count):
    with pytest.raises(AssertionError, match="whole number"):
        checks.check_rule_fire_count(
            spark, loaded_lab, BIG_CARD_PRESENT, str(big_card_present_count)
        )


# check_revenue_by_country


@pytest.fixture
def revenue(loaded_lab) -> pd.DataFrame:
    return warehouse.query(loaded_lab, REVENUE_BY_MERCHANT_COUNTRY)


def test_revenue_right(loaded_lab, revenue, capsys):
    checks.check_revenue_by_country(loaded_lab, revenue)

    assert capsys.readouterr().out.startswith("Correct:")


def test_revenue_right_without_currency_in_any_order(loaded_lab, revenue):
    answer = revenue[["revenue", "country_code"]].sort_values("revenue").reset_index(drop=True)

    checks.check_revenue_by_country(loaded_lab, answer)


def test_revenue_right_as_float(loaded_lab, revenue):
    answer = revenue.assign(revenue=revenue["revenue"].astype(float))

    checks.check_revenue_by_country(loaded_lab, answer)


def test_revenue_one_cent_off(loaded_lab, revenue):
    answer = revenue.copy()
    answer.loc[0, "revenue"] = answer.loc[0, "revenue"] + Decimal("0.01")

    with pytest.raises(AssertionError, match=f"Revenue for {answer.loc[0, 'country_code']}"):
        checks.check_revenue_by_country(loaded_lab, answer)


def test_revenue_missing_country(loaded_lab, revenue):
    with pytest.raises(AssertionError, match="Countries missing"):
        checks.check_revenue_by_country(loaded_lab, revenue.iloc[1:])


def test_revenue_customer_country(loaded_lab, revenue):
    by_customer_country = warehouse.query(
        loaded_lab,
        REVENUE_BY_MERCHANT_COUNTRY.replace("dim_merchant", "dim_customer")
        .replace("m.merchant_id = f.merchant_id", "m.customer_id = f.customer_id"),
    )
    assert not by_customer_country.equals(revenue), "the data cannot tell the countries apart"

    with pytest.raises(AssertionError):
        checks.check_revenue_by_country(loaded_lab, by_customer_country)


def test_revenue_all_days(loaded_lab):
    all_days = warehouse.query(
        loaded_lab,
        "select m.country_code, sum(f.amount) as revenue from fact_transaction as f "
        "join dim_merchant as m on m.merchant_id = f.merchant_id "
        "group by m.country_code order by m.country_code",
    )

    with pytest.raises(AssertionError):
        checks.check_revenue_by_country(loaded_lab, all_days)


def test_revenue_missing_column(loaded_lab, revenue):
    answer = revenue.rename(columns={"revenue": "sum"})

    with pytest.raises(AssertionError, match="needs the columns"):
        checks.check_revenue_by_country(loaded_lab, answer)


def test_revenue_country_twice(loaded_lab, revenue):
    answer = pd.concat([revenue, revenue.iloc[:1]])

    with pytest.raises(AssertionError, match="must appear once"):
        checks.check_revenue_by_country(loaded_lab, answer)


def test_revenue_not_a_dataframe(loaded_lab, revenue):
    with pytest.raises(AssertionError, match="pandas DataFrame"):
        checks.check_revenue_by_country(loaded_lab, revenue.to_dict())


# check_daily_average_amount

# The exercise's answer built on the mart, and an equivalent one on the staging
# view that keeps every digit of the average.
AVERAGE_FROM_MART = """
select event_date, currency, round(revenue / transaction_count, 2) as average_amount
from {{ ref('daily_revenue') }}
order by event_date, currency
"""
AVERAGE_FROM_STAGING = """
select event_date, currency, avg(amount) as average_amount
from {{ ref('stg_fact_transaction') }}
group by event_date, currency
"""


@pytest.fixture(scope="module")
def built_lab(loaded_lab):
    """The loaded lab with daily_revenue and the staging view it reads built by dbt run."""
    result = dbt_runner.run(loaded_lab, "run", "--select", "+daily_revenue")
    assert result.exit_code == 0, result.output[-4000:]
    return loaded_lab


def test_daily_average_right_from_mart(built_lab, capsys):
    checks.check_daily_average_amount(built_lab, AVERAGE_FROM_MART)

    output = capsys.readouterr().out
    assert output.startswith("Correct:")
    assert "one per UTC day and currency" in output


def test_daily_average_right_from_staging(built_lab):
    checks.check_daily_average_amount(built_lab, AVERAGE_FROM_STAGING)


def test_daily_average_revenue_not_average(built_lab):
    model = AVERAGE_FROM_MART.replace("round(revenue / transaction_count, 2)", "revenue")

    with pytest.raises(AssertionError, match="should be"):
        checks.check_daily_average_amount(built_lab, model)


def test_daily_average_cut_to_whole_units(built_lab):
    model = AVERAGE_FROM_MART.replace(
        "round(revenue / transaction_count, 2)", "floor(revenue / transaction_count)"
    )

    with pytest.raises(AssertionError, match="should be"):
        checks.check_daily_average_amount(built_lab, model)


def test_daily_average_local_day(built_lab):
    model = """
    select (event_time at time zone 'Pacific/Auckland')::date as event_date, currency,
           avg(amount) as average_amount
    from {{ ref('stg_fact_transaction') }}
    group by 1, 2
    """

    with pytest.raises(AssertionError):
        checks.check_daily_average_amount(built_lab, model)


def test_daily_average_one_currency_per_day(built_lab):
    model = """
    select event_date, min(currency) as currency, avg(amount) as average_amount
    from {{ ref('stg_fact_transaction') }}
    group by event_date
    """

    with pytest.raises(AssertionError, match="no row for"):
        checks.check_daily_average_amount(built_lab, model)


def test_daily_average_pair_twice(built_lab):
    model = f"{AVERAGE_FROM_STAGING} union all {AVERAGE_FROM_STAGING}"

    with pytest.raises(AssertionError, match="must appear once"):
        checks.check_daily_average_amount(built_lab, model)


def test_daily_average_missing_column(built_lab):
    model = AVERAGE_FROM_MART.replace("as average_amount", "as mean_amount")

    with pytest.raises(AssertionError, match="must return the columns"):
        checks.check_daily_average_amount(built_lab, model)


def test_daily_average_invalid_sql(built_lab):
    model = "select event_date, currency, 1 / 0 as average_amount from {{ ref('daily_revenue') }}"

    with pytest.raises(AssertionError, match="dbt could not compile or run"):
        checks.check_daily_average_amount(built_lab, model)


def test_daily_average_unknown_ref(built_lab):
    model = AVERAGE_FROM_MART.replace("daily_revenue", "no_such_model")

    with pytest.raises(AssertionError, match="dbt could not compile or run"):
        checks.check_daily_average_amount(built_lab, model)


@pytest.mark.parametrize("answer", [None, "", "   ", 42])
def test_daily_average_not_sql(built_lab, answer):
    with pytest.raises(AssertionError, match="must be the SQL"):
        checks.check_daily_average_amount(built_lab, answer)


# check_states_after_failed_test

STATES_AFTER_FAILED_TEST = {
    "check_source_freshness": "success",
    "build_models": "success",
    "test_models": "failed",
    "summarize": "upstream_failed",
}


@pytest.fixture(scope="module")
def payments_dag(settings):
    """The payments_daily DAG, parsed by Airflow's DagBag with the lab's Airflow settings."""
    # DagBag reads Airflow's metadata database, which a fresh lab does not have yet.
    airflow_service.migrate_dags_test_database(settings)
    environment = airflow_service.dags_test_environment(settings)
    with pytest.MonkeyPatch.context() as patch:
        # Airflow reads its settings when it is first imported.
        for name, value in environment.items():
            if name.startswith("AIRFLOW"):
                patch.setenv(name, value)
        from airflow.dag_processing.dagbag import DagBag

        dag_bag = DagBag(dag_folder=str(config.REPO_ROOT / "dags"))
    assert dag_bag.import_errors == {}
    return dag_bag.get_dag("payments_daily")


def test_expected_states_follow_dag(payments_dag):
    assert checks.expected_states_after_failed_test(payments_dag) == STATES_AFTER_FAILED_TEST


def test_states_after_failed_test_right(payments_dag, capsys):
    checks.check_states_after_failed_test(payments_dag, STATES_AFTER_FAILED_TEST)

    output = capsys.readouterr().out
    assert output.startswith("Correct:")
    assert "test_models fails" in output


def test_states_after_failed_test_enum_values(payments_dag):
    from airflow.utils.state import TaskInstanceState

    answer = {
        task_id: TaskInstanceState(state) for task_id, state in STATES_AFTER_FAILED_TEST.items()
    }

    checks.check_states_after_failed_test(payments_dag, answer)


def test_states_after_failed_test_all_success(payments_dag):
    answer = dict.fromkeys(STATES_AFTER_FAILED_TEST, "success")

    with pytest.raises(AssertionError, match="test_models ends in 'failed'"):
        checks.check_states_after_failed_test(payments_dag, answer)


@pytest.mark.parametrize("state", ["failed", "skipped", "success"])
def test_states_after_failed_test_summarize(payments_dag, state):
    answer = {**STATES_AFTER_FAILED_TEST, "summarize": state}

    with pytest.raises(AssertionError, match="summarize ends in 'upstream_failed'"):
        checks.check_states_after_failed_test(payments_dag, answer)


def test_states_after_failed_test_upstream_failed_too_early(payments_dag):
    answer = {**STATES_AFTER_FAILED_TEST, "build_models": "upstream_failed"}

    with pytest.raises(AssertionError, match="build_models ends in 'success'"):
        checks.check_states_after_failed_test(payments_dag, answer)


def test_states_after_failed_test_missing_task(payments_dag):
    answer = {**STATES_AFTER_FAILED_TEST}
    del answer["summarize"]

    with pytest.raises(AssertionError, match="Give a state for every task"):
        checks.check_states_after_failed_test(payments_dag, answer)


def test_states_after_failed_test_unknown_task(payments_dag):
    answer = {**STATES_AFTER_FAILED_TEST, "send_report": "upstream_failed"}

    with pytest.raises(AssertionError, match="no tasks named"):
        checks.check_states_after_failed_test(payments_dag, answer)


def test_states_after_failed_test_not_a_dict(payments_dag):
    with pytest.raises(AssertionError, match="must be a dict"):
        checks.check_states_after_failed_test(payments_dag, list(STATES_AFTER_FAILED_TEST.items()))


def test_expected_states_dbt_build_dag(payments_dag):
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG("build_then_report", schedule=None) as dag:
        seed = BashOperator(task_id="seed", bash_command="dbt seed")
        build = BashOperator(task_id="build", bash_command="/opt/venv/bin/dbt build -s marts")
        report = EmptyOperator(task_id="report")
        EmptyOperator(task_id="unrelated")
        seed >> build >> report

    assert checks.expected_states_after_failed_test(dag) == {
        "seed": "success",
        "build": "failed",
        "report": "upstream_failed",
        "unrelated": "success",
    }


def test_expected_states_other_trigger_rule(payments_dag):
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG("test_then_clean_up", schedule=None) as dag:
        test = BashOperator(task_id="test", bash_command="dbt test")
        clean_up = EmptyOperator(task_id="clean_up", trigger_rule="all_done")
        test >> clean_up

    with pytest.raises(ValueError, match="trigger rule all_done"):
        checks.expected_states_after_failed_test(dag)


def test_expected_states_no_test_task(payments_dag):
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG

    with DAG("run_only", schedule=None) as dag:
        BashOperator(task_id="run", bash_command="dbt run")

    with pytest.raises(ValueError, match="expected one task"):
        checks.expected_states_after_failed_test(dag)
