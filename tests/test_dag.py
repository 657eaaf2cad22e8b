"""Tests of the payments_daily DAG in dags/.

The parsing tests need no lab. The run tests call `airflow dags test`, which
runs the tasks in one process against the loaded lab, with Airflow's SQLite
metadata database in the lab's home folder.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from labkit.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS_DIR = REPO_ROOT / "dags"
DBT_PROJECT_DIR = REPO_ROOT / "dbt"
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
AIRFLOW_TIMEOUT_SECONDS = 600

DAG_ID = "payments_daily"
TASK_ORDER = ["check_source_freshness", "build_models", "test_models", "summarize"]
DBT_TASKS = TASK_ORDER[:3]


def airflow_env(settings: Settings) -> dict[str, str]:
    """Return os.environ with the lab's settings and Airflow's home and DAG folder."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(settings.home / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "LAB_PG_HOST": settings.pg_host,
            "LAB_PG_PORT": str(settings.pg_port),
            "LAB_PG_USER": settings.pg_user,
            "LAB_PG_PASSWORD": settings.pg_password,
            "LAB_PG_DATABASE": settings.pg_database,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
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
    counts = logged_mart_counts(output)
    assert counts["daily_revenue"] == currencies
    assert counts["daily_fraud_summary"] == int(has_transactions)
    assert counts["customer_kpis"] == customers


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
