"""Airflow's UI and scheduler as native lab processes, bound to 127.0.0.1.

`labkit lab up --with airflow` starts them. Airflow keeps its metadata in a
database `airflow` on the lab's PostgreSQL server, so the scheduler can use the
LocalExecutor. The scheduler starts without its log server, which would listen
on every interface; task logs are still written to AIRFLOW_HOME/logs.

The functions at the end of the module run `airflow dags test` instead, which
needs none of these processes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from labkit import dbt_runner, postgres
from labkit.config import REPO_ROOT, Settings
from labkit.processes import (
    LabError,
    port_is_free,
    read_pid,
    stop_process_group,
    wait_until,
)

log = logging.getLogger(__name__)

DATABASE = "airflow"
# The API server and every process it starts; the order is the start order.
COMPONENTS = {
    "api-server": ["api-server", "--host", "{host}", "--port", "{port}", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
}


def home(settings: Settings) -> Path:
    return settings.home / "airflow"


def url(settings: Settings) -> str:
    return f"http://{settings.airflow_host}:{settings.airflow_port}"


def environment(settings: Settings) -> dict[str, str]:
    """Return the environment every Airflow command of the lab runs with."""
    database_url = (
        f"postgresql+psycopg2://{settings.pg_user}:{settings.pg_password}"
        f"@{settings.pg_host}:{settings.pg_port}/{DATABASE}"
    )
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home(settings)),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database_url,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{url(settings)}/execution/",
        # A single-user lab on loopback: every visitor of the UI is an admin,
        # so there is no generated password to look up.
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        DBT_SEND_ANONYMOUS_USAGE_STATS="False",
    )
    return env


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _pid_file(settings: Settings, component: str) -> Path:
    return home(settings) / f"{component}.pid"


def log_file(settings: Settings, component: str) -> Path:
    return settings.logs_dir / f"airflow-{component}.log"


def is_running(settings: Settings) -> bool:
    return any(read_pid(_pid_file(settings, name)) for name in COMPONENTS)


def is_healthy(settings: Settings) -> bool:
    """Return True when the API server reports a healthy metadata database and scheduler."""
    try:
        with urllib.request.urlopen(f"{url(settings)}/api/v2/monitor/health", timeout=3) as r:
            health = json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return (
        health.get("metadatabase", {}).get("status") == "healthy"
        and health.get("scheduler", {}).get("status") == "healthy"
    )


def start(settings: Settings) -> None:
    """Migrate Airflow's database and start its components unless they run already."""
    if is_running(settings):
        log.info("airflow already running")
    else:
        if not port_is_free(settings.airflow_host, settings.airflow_port):
            raise LabError(
                f"port {settings.airflow_port} on {settings.airflow_host} is taken by another "
                "program; stop it, or choose another port with LAB_AIRFLOW_PORT"
            )
        postgres.create_database(settings, DATABASE)
        home(settings).mkdir(parents=True, exist_ok=True)
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        _migrate(settings)
        for component in COMPONENTS:
            _launch(settings, component)

    wait_until(
        lambda: is_healthy(settings),
        timeout=120,
        what="airflow",
        hint=f"see the airflow-*.log files in {settings.logs_dir}",
    )
    log.info("airflow UI on %s", url(settings))


def _migrate(settings: Settings) -> None:
    result = subprocess.run(
        [_airflow(), "db", "migrate"],
        env=environment(settings), capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise LabError(f"airflow db migrate failed:\n{result.stderr[-2000:]}")


def _launch(settings: Settings, component: str) -> None:
    arguments = [
        part.format(host=settings.airflow_host, port=settings.airflow_port)
        for part in COMPONENTS[component]
    ]
    with open(log_file(settings, component), "ab") as out:
        process = subprocess.Popen(
            [_airflow(), *arguments],
            env=environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _pid_file(settings, component).write_text(str(process.pid))
    log.info("airflow %s starting (pid %d)", component, process.pid)


def stop(settings: Settings) -> None:
    for component in reversed(list(COMPONENTS)):
        pid = read_pid(_pid_file(settings, component))
        if pid is not None:
            stop_process_group(pid, f"airflow {component}")
        _pid_file(settings, component).unlink(missing_ok=True)


# `airflow dags test` runs a DAG's tasks one after the other in a single
# process, without scheduler or API server. The functions below give those runs
# a SQLite metadata database of their own in AIRFLOW_HOME, so they need no
# running Airflow service. Their runs therefore do not appear in the UI of
# `labkit lab up --with airflow`, which keeps its metadata in PostgreSQL.


@dataclass(frozen=True)
class CommandResult:
    """Exit code and combined stdout and stderr of one Airflow command."""

    arguments: tuple[str, ...]
    exit_code: int
    output: str

    @property
    def command(self) -> str:
        return " ".join(["airflow", *self.arguments])


def dags_test_database(settings: Settings) -> Path:
    """Return the SQLite file that contains the metadata of the lab's `airflow dags test` runs."""
    return home(settings) / "airflow.db"


def dags_test_environment(settings: Settings) -> dict[str, str]:
    """Return the environment of `airflow dags test` and of Airflow imported in a notebook.

    The DAG's dbt tasks and its summarize task read the lab's LAB_PG_* settings
    from it, and dbt writes its artifacts and log to the lab's folder.
    """
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home(settings)),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{dags_test_database(settings)}",
        LAB_PG_HOST=settings.pg_host,
        LAB_PG_PORT=str(settings.pg_port),
        LAB_PG_USER=settings.pg_user,
        LAB_PG_PASSWORD=settings.pg_password,
        LAB_PG_DATABASE=settings.pg_database,
        DBT_TARGET_PATH=str(dbt_runner.target_dir(settings)),
        DBT_LOG_PATH=str(dbt_runner.log_dir(settings)),
        DBT_SEND_ANONYMOUS_USAGE_STATS="False",
    )
    return env


def _run_airflow(settings: Settings, arguments: list[str], timeout: float) -> CommandResult:
    finished = subprocess.run(
        [_airflow(), *arguments],
        env=dags_test_environment(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CommandResult(tuple(arguments), finished.returncode, finished.stdout + finished.stderr)


def migrate_dags_test_database(settings: Settings) -> None:
    """Create or upgrade the metadata tables in dags_test_database, unless they are current."""
    home(settings).mkdir(parents=True, exist_ok=True)
    result = _run_airflow(settings, ["db", "migrate"], timeout=600)
    if result.exit_code != 0:
        raise LabError(
            f"airflow db migrate failed for {dags_test_database(settings)} "
            f"(exit code {result.exit_code}):\n{result.output[-2000:]}"
        )


def dags_test(
    settings: Settings, dag_id: str, logical_date: str, timeout: float = 1800
) -> CommandResult:
    """Run `airflow dags test dag_id logical_date` and return its exit code and output.

    The command replaces an earlier run of the same DAG and logical date. It
    exits with 1 when a task failed. It also waits for the retries of a failing
    task, which can take many minutes with the DAG's retry delays, hence the
    long default timeout in seconds.
    """
    return _run_airflow(settings, ["dags", "test", dag_id, logical_date], timeout=timeout)
