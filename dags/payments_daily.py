"""
# payments_daily

Builds and tests the payment marts with dbt once a day, for the day of data
that the run's data interval covers, and logs how many rows the marts contain
for that interval.

1. `check_source_freshness` runs `dbt source freshness`. It warns when no
   transaction was loaded for 1 day and fails after 7 days.
2. `build_models` runs `dbt seed`, then `dbt run` with the data interval as
   the vars `start` and `end`. The incremental daily marts (`daily_revenue`,
   `daily_fraud_summary`) rebuild every UTC day that overlaps the interval,
   the days of transactions loaded since their last run (late ones included)
   and their lookback window. The other marts are rebuilt in full.
3. `test_models` runs `dbt test`, which runs the data tests and the unit
   tests. One failing test fails the task.
4. `summarize` logs the mart row counts for the data interval.

Each task starts only when the previous one succeeded, so a failing test
stops the run before `summarize`.

A run covers the UTC day before its logical date, so the run for 2018-04-02
covers 2018-04-01. The tasks take that interval from the run and never from
the wall clock. Two checks compare with the current time on purpose, because
they judge the warehouse as it is now: the freshness of `fact_transaction`
and the age of inferred dimension rows. A backfill of old days therefore
still fails when the stream has loaded nothing for 7 days.

**Backfill.** A run rebuilds the days of its interval, so runs for a range of
logical dates rebuild every day of the range, and the marts then equal a full
build (tests/test_dag.py checks this). Without a scheduler, run
`airflow dags test payments_daily DATE` once for each logical date, oldest
first. `airflow backfill create --dag-id payments_daily --from-date ...
--to-date ...` only creates queued runs, which the scheduler of
`labkit lab up --with airflow` executes. Add `--dry-run` first to see which
logical dates it picks.

**Setup.** The dbt project and its `profiles.yml` are in the repository's
`dbt/` folder. dbt is the executable next to the Python interpreter that runs
Airflow, unless `LAB_DBT_BIN` names another one. The warehouse connection comes
from the `LAB_PG_*` environment variables, which dbt's profile and
`labkit.config` read, so `labkit` must be installed in Airflow's environment.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import CronTriggerTimetable, dag, task

log = logging.getLogger(__name__)

# dags/ and dbt/ are sibling folders at the repository root.
DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt"
DBT_BIN = os.environ.get("LAB_DBT_BIN") or str(Path(sys.executable).parent / "dbt")

# Rendered by Airflow's Jinja before bash runs the command.
DBT_VARS = '{"start": "{{ data_interval_start }}", "end": "{{ data_interval_end }}"}'

# Added to the inherited environment of every dbt task. Usage tracking would
# send events to dbt Labs over the internet.
DBT_ENV = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "False"}

DEFAULT_ARGS = {
    "owner": "payments-lab",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    # A multiplier in Airflow 3.3: 2.0 doubles the delay on each retry, and
    # True would count as 1.0, a constant delay.
    "retry_exponential_backoff": 2.0,
    "execution_timeout": timedelta(minutes=30),
}

# Mart tables with one row per event_date (and currency). summarize counts
# their rows inside the data interval, and counts the other marts in full.
DATED_MARTS = ("daily_revenue", "daily_fraud_summary")
UNDATED_MARTS = (
    "detection_quality",
    "customer_kpis",
    "merchant_category_sales",
    "merchant_location_sales",
)


def dbt_command(*arguments: str) -> str:
    """Return a shell command that runs dbt on the lab's project and profile."""
    return shlex.join(
        [
            DBT_BIN,
            *arguments,
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--vars",
            DBT_VARS,
        ]
    )


def dbt_task(task_id: str, bash_command: str, **kwargs) -> BashOperator:
    """Create a task that runs dbt and fails on any non-zero exit code."""
    return BashOperator(
        task_id=task_id,
        bash_command=bash_command,
        env=DBT_ENV,
        append_env=True,
        # By default, exit code 99 marks the task as skipped. dbt exits with 0,
        # 1 or 2 (ExitCodes in dbt-core 1.11), so every failure fails the task.
        skip_on_exit_code=None,
        **kwargs,
    )


@task
def summarize(
    data_interval_start: pendulum.DateTime | None = None,
    data_interval_end: pendulum.DateTime | None = None,
) -> dict[str, int]:
    """Log and return the row count of each mart for the data interval.

    Dated marts count rows whose event_date lies in [start, end) as UTC
    dates. The other marts are counted in full.
    """
    import psycopg2

    from labkit.config import load

    settings = load()
    first_day = data_interval_start.in_timezone("UTC").date()
    end_day = data_interval_end.in_timezone("UTC").date()
    counts: dict[str, int] = {}

    with closing(psycopg2.connect(**settings.pg_connect_kwargs())) as connection:
        with connection.cursor() as cursor:
            for table in DATED_MARTS:
                cursor.execute(
                    f"select count(*) from marts.{table}"
                    " where event_date >= %s and event_date < %s",
                    (first_day, end_day),
                )
                counts[table] = cursor.fetchone()[0]
            for table in UNDATED_MARTS:
                cursor.execute(f"select count(*) from marts.{table}")
                counts[table] = cursor.fetchone()[0]

    log.info(
        "Mart rows for %s to %s (end excluded), counted on %s: %s",
        first_day,
        end_day,
        settings.postgres_url,
        ", ".join(f"{table}={count}" for table, count in counts.items()),
    )
    return counts


@dag(
    dag_id="payments_daily",
    doc_md=__doc__,
    # "@daily" with a one-day data interval that ends at the logical date.
    # Every run, scheduled or manual, covers the UTC day before it, so the
    # run for 2018-04-02 covers 2018-04-01. A plain "@daily" string gives a
    # zero-length interval in Airflow 3, unless the scheduler option
    # create_cron_data_intervals is set.
    schedule=CronTriggerTimetable("@daily", timezone="UTC", interval=timedelta(days=1)),
    start_date=pendulum.datetime(2018, 4, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["payments", "dbt"],
)
def payments_daily():
    check_source_freshness = dbt_task(
        "check_source_freshness", dbt_command("source", "freshness")
    )
    build_models = dbt_task(
        "build_models", f"{dbt_command('seed')} && {dbt_command('run')}"
    )
    # A failed data test fails again on the same rows, so a retry only delays
    # the failure.
    test_models = dbt_task("test_models", dbt_command("test"), retries=0)

    check_source_freshness >> build_models >> test_models >> summarize()


payments_daily()
