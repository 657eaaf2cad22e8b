"""Helpers that run dbt on the repository's project and compare mart tables.

tests/test_dbt.py and tests/test_dag.py share them. dbt writes its target
folder (manifest, run results, catalog) and its logs under the lab's home
folder, so the tests never overwrite the dbt/target folder of a learner or of
another lab that runs dbt at the same time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from psycopg2 import sql

from labkit.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO_ROOT / "dbt"
DBT_BIN = Path(sys.executable).parent / "dbt"
DBT_TIMEOUT_SECONDS = 600

# Every mart that dbt builds in the marts schema.
MARTS = (
    "daily_revenue",
    "daily_fraud_summary",
    "detection_quality",
    "customer_kpis",
    "merchant_category_sales",
    "merchant_location_sales",
)


def dbt_target_dir(settings: Settings) -> Path:
    """Return the folder where dbt writes run_results.json and catalog.json."""
    return settings.home / "dbt" / "target"


def dbt_env(settings: Settings) -> dict[str, str]:
    """Return os.environ with the lab's settings, dbt's folders and tracking off."""
    env = dict(os.environ)
    env.update(
        {
            "LAB_PG_HOST": settings.pg_host,
            "LAB_PG_PORT": str(settings.pg_port),
            "LAB_PG_USER": settings.pg_user,
            "LAB_PG_PASSWORD": settings.pg_password,
            "LAB_PG_DATABASE": settings.pg_database,
            "DBT_TARGET_PATH": str(dbt_target_dir(settings)),
            "DBT_LOG_PATH": str(settings.home / "dbt" / "logs"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
            # dbt --version would otherwise ask PyPI for the latest release.
            "DBT_VERSION_CHECK": "False",
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


def dbt_test_statuses(settings: Settings) -> dict[str, str]:
    """Return test name -> status (pass, warn, fail, error) of the last dbt invocation."""
    run_results = json.loads((dbt_target_dir(settings) / "run_results.json").read_text())
    # A data test's unique_id is "test.<project>.<name>.<hash>", and a unit
    # test's is "unit_test.<project>.<model>.<name>".
    statuses = {}
    for result in run_results["results"]:
        kind, _project, *names = result["unique_id"].split(".")
        if kind == "test":
            statuses[names[0]] = result["status"]
        elif kind == "unit_test":
            statuses[names[-1]] = result["status"]
    return statuses


def failed_test_names(settings: Settings) -> set[str]:
    """Return the names of the tests that failed in the last dbt invocation."""
    return {
        name for name, status in dbt_test_statuses(settings).items() if status in ("fail", "error")
    }


def copy_marts(pg, prefix: str, marts: tuple[str, ...] = MARTS) -> None:
    """Copy each mart into a temporary table named prefix + mart name."""
    with pg.cursor() as cursor:
        for mart in marts:
            copy = sql.Identifier(prefix + mart)
            cursor.execute(sql.SQL("drop table if exists {}").format(copy))
            cursor.execute(
                sql.SQL("create temporary table {} as select * from {}").format(
                    copy, sql.Identifier("marts", mart)
                )
            )


def count_differing_rows(pg, prefix: str, mart: str) -> int:
    """Count the rows that only one of the mart and its copy contains.

    EXCEPT ALL keeps repeated rows, so a mart row that occurs twice in one
    table and once in the other counts as a difference too.
    """
    copy = sql.Identifier(prefix + mart)
    table = sql.Identifier("marts", mart)
    query = sql.SQL(
        "select count(*) from ("
        " (select * from {table} except all select * from {copy})"
        " union all"
        " (select * from {copy} except all select * from {table})"
        ") as differing_rows"
    ).format(table=table, copy=copy)
    with pg.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchone()[0]
