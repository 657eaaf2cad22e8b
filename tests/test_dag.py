"""Tests of the payments_daily DAG in dags/.

The parsing tests need no lab. The run tests call `airflow dags test`, which
runs the tasks in one process against the loaded lab, with Airflow's SQLite
metadata database in the lab's home folder. Each run takes about a minute on
two cores, so the tests plant and check as much as they can per run.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from labkit.config import Settings

from .dbt_helpers import (
    DBT_PROJECT_DIR,
    MARTS,
    copy_marts,
    count_differing_rows,
    dbt_env,
    failed_test_names,
    run_dbt,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS_DIR = REPO_ROOT / "dags"
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
AIRFLOW_TIMEOUT_SECONDS = 600

DAG_ID = "payments_daily"
TASK_ORDER = ["check_source_freshness", "build_models", "test_models", "summarize"]
DBT_TASKS = TASK_ORDER[:3]


def airflow_env(settings: Settings) -> dict[str, str]:
    """Return dbt's test environment with Airflow's home and DAG folder added.

    The DAG's dbt tasks inherit it, so they write dbt's target folder under the
    lab's home too, where failed_test_names reads it.
    """
    env = dbt_env(settings)
    env.update(
        {
            "AIRFLOW_HOME": str(settings.home / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        }
    )
    return env


def run_airflow(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the Airflow CLI and return the finished process."""
    return subprocess.run(
        [str(AIRFLOW_BIN), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=AIRFLOW_TIMEOUT_SECONDS,
        check=False,
    )


def latest_task_states(env: dict[str, str]) -> dict[str, str | None]:
    """Return task_id -> state of the newest payments_daily run in the metadata DB."""
    database = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "select task_id, state from task_instance where run_id = ("
            " select run_id from dag_run where dag_id = ? order by id desc limit 1"
            ") and dag_id = ?",
            (DAG_ID, DAG_ID),
        ).fetchall()
    return dict(rows)


def logged_mart_counts(output: str) -> dict[str, int]:
    """Parse the row counts that summarize logs, such as daily_revenue=6."""
    match = re.search(r"Mart rows for .*?: ((?:\w+=\d+(?:, )?)+)", output)
    assert match, "summarize logged no mart row counts"
    return {name: int(count) for name, count in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture(scope="module")
def airflow_home(settings) -> dict[str, str]:
    """Create or upgrade Airflow's metadata DB and return the CLI environment."""
    env = airflow_env(settings)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    result = run_airflow(env, "db", "migrate")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return env


@pytest.fixture(scope="module")
def dag(airflow_home):
    """Parse dags/ with Airflow's DagBag and return the payments_daily DAG."""
    with pytest.MonkeyPatch.context() as patch:
        # Airflow reads its home folder when it is first imported.
        for name, value in airflow_home.items():
            if name.startswith("AIRFLOW"):
                patch.setenv(name, value)
        from airflow.dag_processing.dagbag import DagBag

        dag_bag = DagBag(dag_folder=str(DAGS_DIR))
    assert dag_bag.import_errors == {}
    assert DAG_ID in dag_bag.dag_ids
    return dag_bag.get_dag(DAG_ID)


@pytest.fixture(scope="module")
def airflow_run_env(loaded_lab, airflow_home) -> dict[str, str]:
    """The Airflow CLI environment, once the lab holds loaded transactions."""
    return airflow_home


def test_dag_tasks_run_in_order(dag):
    assert dag.task_ids == TASK_ORDER
    assert dag.get_task(TASK_ORDER[0]).upstream_task_ids == set()
    for upstream, downstream in zip(TASK_ORDER, TASK_ORDER[1:]):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    assert dag.get_task(TASK_ORDER[-1]).downstream_task_ids == set()


def test_dag_schedule_and_defaults(dag):
    assert dag.timetable.expression == "0 0 * * *"
    assert dag.timetable.interval == timedelta(days=1)
    assert dag.start_date == datetime(2018, 4, 1, tzinfo=timezone.utc)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.default_args["retries"] == 2
    assert dag.default_args["retry_exponential_backoff"] == 2.0
    assert dag.doc_md.lstrip().startswith("# payments_daily")


def test_dbt_tasks_use_repository_project(dag):
    for task_id in DBT_TASKS:
        command = dag.get_task(task_id).bash_command
        assert f"--project-dir {DBT_PROJECT_DIR}" in command, task_id
        assert f"--profiles-dir {DBT_PROJECT_DIR}" in command, task_id
        assert "{{ data_interval_start }}" in command, task_id
        assert "{{ data_interval_end }}" in command, task_id


def test_dags_test_succeeds(airflow_run_env, pg):
    result = run_airflow(airflow_run_env, "dags", "test", DAG_ID, "2018-04-02")
    output = result.stdout + result.stderr

    assert result.returncode == 0, output[-4000:]
    assert latest_task_states(airflow_run_env) == {task: "success" for task in TASK_ORDER}

    # The run for 2018-04-02 covers 2018-04-01 (UTC).
    with pg.cursor() as cursor:
        cursor.execute(
            "select count(distinct currency), count(*) > 0"
            " from public.fact_transaction"
            " where event_time >= '2018-04-01T00:00Z'"
            " and event_time < '2018-04-02T00:00Z'"
        )
        currencies, has_transactions = cursor.fetchone()
        cursor.execute("select count(distinct customer_id) from public.fact_transaction")
        (customers,) = cursor.fetchone()
        cursor.execute(
            "select count(distinct (event_time at time zone 'UTC')::date)"
            " from public.fact_transaction"
        )
        (days,) = cursor.fetchone()
    counts = logged_mart_counts(output)
    assert set(counts) == set(MARTS)
    assert counts["daily_revenue"] == currencies
    assert counts["daily_fraud_summary"] == int(has_transactions)
    assert counts["customer_kpis"] == customers
    # One row per day plus the overall row.
    assert counts["detection_quality"] == days + 1


def test_dags_test_fails_on_bad_row(airflow_run_env, pg):
    with pg.cursor() as cursor:
        cursor.execute(
            "select transaction_id, channel from public.fact_transaction"
            " order by transaction_id limit 1"
        )
        transaction_id, channel = cursor.fetchone()
        cursor.execute(
            "update public.fact_transaction set channel = 'atm' where transaction_id = %s",
            (transaction_id,),
        )
    try:
        result = run_airflow(airflow_run_env, "dags", "test", DAG_ID, "2018-04-03")
        states = latest_task_states(airflow_run_env)
    finally:
        with pg.cursor() as cursor:
            cursor.execute(
                "update public.fact_transaction set channel = %s where transaction_id = %s",
                (channel, transaction_id),
            )

    assert result.returncode != 0
    assert states["check_source_freshness"] == "success"
    assert states["build_models"] == "success"
    assert states["test_models"] == "failed"
    assert states["summarize"] != "success"


# Columns of public.fact_transaction that a planted copy of a row takes over.
FACT_COLUMNS = (
    "event_time, customer_id, card_id, merchant_id, amount, currency, channel,"
    " mcc, fraud_score, is_flagged, fraud_rules, kafka_topic, kafka_partition,"
    " kafka_timestamp"
)


def test_dags_test_fails_on_duplicate_payment(airflow_run_env, pg, settings):
    """A payment loaded twice under two transaction_ids fails test_models.

    The stream's sink keeps the first message of each transaction_id, and the
    fact table's primary key rejects a second row with the same id, so a Kafka
    message delivered twice cannot duplicate a transaction. The duplicate that
    can still reach the warehouse is the same payment under a new
    transaction_id, as when a producer generates a new id when it retries a
    send. The test plants such a copy of a loaded row (new id and Kafka offset,
    same card, merchant, event_time and amount) into fact_transaction.
    build_models counts it twice in the marts, and the no_duplicate_payments
    test on stg_fact_transaction fails test_models, which stops summarize.
    """
    with pg.cursor() as cursor:
        cursor.execute(
            f"insert into public.fact_transaction (transaction_id, kafka_offset, {FACT_COLUMNS})"
            f" select 'duplicate-1', kafka_offset + 1000000, {FACT_COLUMNS}"
            " from public.fact_transaction order by transaction_id limit 1"
        )
    try:
        result = run_airflow(airflow_run_env, "dags", "test", DAG_ID, "2018-04-04")
        states = latest_task_states(airflow_run_env)
        failed = failed_test_names(settings)
    finally:
        with pg.cursor() as cursor:
            cursor.execute(
                "delete from public.fact_transaction where transaction_id = 'duplicate-1'"
            )
        # The duplicate reached the incremental marts, and deleting it leaves
        # no newer loaded_at behind, so only a full rebuild removes it.
        rebuild = run_dbt(settings, "run", "--full-refresh")
        assert rebuild.returncode == 0, rebuild.stdout[-4000:]

    assert result.returncode != 0
    assert states["check_source_freshness"] == "success"
    assert states["build_models"] == "success"
    assert states["test_models"] == "failed"
    assert states["summarize"] != "success"
    assert "stg_fact_transaction_no_duplicate_payments" in failed


# Logical dates of the backfill. Their runs cover the UTC days 2018-04-01 and
# 2018-04-02, which lie outside the lookback window of the lab's data
# (2018-04-01 to 2018-04-07), so only the runs' intervals rebuild them.
BACKFILL_DATES = ("2018-04-02", "2018-04-03")
BACKFILL_DAYS = ("2018-04-01", "2018-04-02")


def labelled_counts(pg) -> dict[str, tuple[int, int]]:
    """Return day -> (labelled fraud in the mart, labelled fraud in the fact) for the backfill days."""
    with pg.cursor() as cursor:
        cursor.execute(
            "select summary.event_date::text, summary.labelled_fraud_count, count(label.transaction_id)"
            " from marts.daily_fraud_summary as summary"
            " join public.fact_transaction as fact"
            "  on (fact.event_time at time zone 'UTC')::date = summary.event_date"
            " left join public.fraud_label as label using (transaction_id)"
            " where summary.event_date::text = any(%s)"
            " group by summary.event_date, summary.labelled_fraud_count",
            (list(BACKFILL_DAYS),),
        )
        return {day: (mart, fact) for day, mart, fact in cursor.fetchall()}


def test_backfill_matches_full_build(airflow_run_env, pg, settings):
    """Runs for a range of logical dates leave the marts as one full build would.

    `airflow backfill create` only queues runs for a scheduler, so the test
    runs `airflow dags test` once per logical date, one run after the other as
    the DAG's max_active_runs of 1 would. What needs a backfill is a change
    that the incremental runs cannot see: here fraud labels that arrive after
    their days were built, which leave no newer loaded_at behind. The test
    removes the labels of the backfill days, rebuilds daily_fraud_summary and
    the marts built from it in full, puts the labels back, runs the backfill
    and compares every mart with a new full build.
    """
    with pg.cursor() as cursor:
        cursor.execute(
            "delete from public.fraud_label as label using public.fact_transaction as fact"
            " where label.transaction_id = fact.transaction_id"
            " and (fact.event_time at time zone 'UTC')::date::text = any(%s)"
            " returning label.transaction_id, label.scenario",
            (list(BACKFILL_DAYS),),
        )
        late_labels = cursor.fetchall()
    try:
        without_labels = run_dbt(
            settings, "run", "--full-refresh", "--select", "daily_fraud_summary+"
        )
    finally:
        with pg.cursor() as cursor:
            cursor.executemany(
                "insert into public.fraud_label (transaction_id, scenario) values (%s, %s)",
                late_labels,
            )
    assert without_labels.returncode == 0, without_labels.stdout[-4000:]
    before_backfill = labelled_counts(pg)

    first = run_airflow(airflow_run_env, "dags", "test", DAG_ID, BACKFILL_DATES[0])
    first_states = latest_task_states(airflow_run_env)
    after_first_run = labelled_counts(pg)
    second = run_airflow(airflow_run_env, "dags", "test", DAG_ID, BACKFILL_DATES[1])
    second_states = latest_task_states(airflow_run_env)
    copy_marts(pg, "backfilled_")

    full_build = run_dbt(settings, "run", "--full-refresh")
    assert full_build.returncode == 0, full_build.stdout[-4000:]
    differing_rows = {mart: count_differing_rows(pg, "backfilled_", mart) for mart in MARTS}

    first_day, second_day = BACKFILL_DAYS
    # Both days have labels, and the marts built without them undercount.
    assert before_backfill[first_day][0] < before_backfill[first_day][1]
    assert before_backfill[second_day][0] < before_backfill[second_day][1]
    # Each run rebuilt the day of its own interval and no other.
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert first_states == {task: "success" for task in TASK_ORDER}
    assert after_first_run[first_day][0] == after_first_run[first_day][1]
    assert after_first_run[second_day][0] < after_first_run[second_day][1]
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert second_states == {task: "success" for task in TASK_ORDER}
    assert differing_rows == {mart: 0 for mart in MARTS}
