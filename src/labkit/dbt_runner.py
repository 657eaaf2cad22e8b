"""Run dbt on the repository's project against one lab's warehouse.

dbt writes its artifacts (manifest.json, run_results.json, the compiled SQL) to
dbt/target in the lab's folder instead of the project's dbt/target, and its log
to dbt/logs there, the folders that the tests use too. Two labs, or a notebook
and the test suite, then never read each other's run_results.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from labkit.config import REPO_ROOT, Settings

PROJECT_DIR = REPO_ROOT / "dbt"
TIMEOUT_SECONDS = 600

# The counts of dbt's closing line, such as "Done. PASS=108 WARN=0 ERROR=0 SKIP=0 ...".
_SUMMARY_LINE = re.compile(r"Done\. ((?:[A-Z-]+=\d+\s*)+)$", re.MULTILINE)


class DbtError(RuntimeError):
    """dbt exited with an error where the caller needs its output; the message ends with it."""


@dataclass(frozen=True)
class DbtResult:
    """Exit code and console output of one dbt command."""

    arguments: tuple[str, ...]
    exit_code: int
    output: str

    @property
    def command(self) -> str:
        """The command as typed in a terminal, without the folder options that run() adds."""
        return " ".join(["dbt", *self.arguments])

    def summary(self) -> dict[str, int]:
        """Return the counts of dbt's closing "Done." line: PASS, WARN, ERROR, SKIP, NO-OP, TOTAL.

        Raises DbtError when the output has no such line, for example when dbt
        stopped before it ran anything.
        """
        matches = _SUMMARY_LINE.findall(self.output)
        if not matches:
            raise DbtError(
                f"'{self.command}' printed no summary line (exit code {self.exit_code}):\n"
                f"{self.output[-3000:]}"
            )
        return {name: int(count) for name, count in re.findall(r"([A-Z-]+)=(\d+)", matches[-1])}


def executable() -> str:
    """Return the dbt to run: LAB_DBT_BIN, else the dbt next to this Python, as the DAG does."""
    return os.environ.get("LAB_DBT_BIN") or str(Path(sys.executable).with_name("dbt"))


def target_dir(settings: Settings) -> Path:
    return settings.home / "dbt" / "target"


def log_dir(settings: Settings) -> Path:
    return settings.home / "dbt" / "logs"


def environment(settings: Settings) -> dict[str, str]:
    """Return os.environ with the lab's LAB_PG_* settings, which dbt/profiles.yml reads."""
    env = dict(os.environ)
    env.update(
        LAB_PG_HOST=settings.pg_host,
        LAB_PG_PORT=str(settings.pg_port),
        LAB_PG_USER=settings.pg_user,
        LAB_PG_PASSWORD=settings.pg_password,
        LAB_PG_DATABASE=settings.pg_database,
        # Usage tracking would send events to dbt Labs over the internet.
        DBT_SEND_ANONYMOUS_USAGE_STATS="False",
    )
    return env


def run(settings: Settings, *arguments: str, timeout: float = TIMEOUT_SECONDS) -> DbtResult:
    """Run dbt with the given arguments on the repository's project and return the result.

    A failing dbt command does not raise. The exit code is 0 on success, 1 when
    a test or a model failed, and 2 when dbt could not run at all.
    """
    command = [
        executable(),
        *arguments,
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--target-path",
        str(target_dir(settings)),
        "--log-path",
        str(log_dir(settings)),
        "--no-use-colors",
    ]
    finished = subprocess.run(
        command,
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return DbtResult(tuple(arguments), finished.returncode, finished.stdout + finished.stderr)


def _read_artifact(settings: Settings, name: str) -> dict[str, Any]:
    path = target_dir(settings) / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run a dbt command first, such as dbt build")
    return json.loads(path.read_text())


def results(settings: Settings) -> pd.DataFrame:
    """Return one row per node of the last dbt command, from its run_results.json.

    Columns: name, resource_type (model, seed, test, unit_test, ...), status
    (success, pass, warn, fail, error, skipped), failures (rows a test found;
    None for other nodes), message and compiled_code.
    """
    run_results = _read_artifact(settings, "run_results.json")
    rows = []
    for result in run_results["results"]:
        # unique_id has the form "<resource_type>.<project>.<name>[.<hash>]".
        resource_type, _, name, *_ = result["unique_id"].split(".")
        rows.append(
            {
                "name": name,
                "resource_type": resource_type,
                "status": result["status"],
                "failures": result.get("failures"),
                "message": result.get("message"),
                "compiled_code": result.get("compiled_code"),
            }
        )
    columns = ["name", "resource_type", "status", "failures", "message", "compiled_code"]
    return pd.DataFrame(rows, columns=columns)


def tests_by_kind(settings: Settings) -> pd.DataFrame:
    """Return how many data tests of each kind the project has, from the last manifest.json.

    Columns: kind (the generic test's name, or "singular" for a test written
    as one SQL file), defined_in ("dbt" for dbt's built-in generic tests,
    "this project" for the macros in dbt/tests/generic, else the package) and
    tests. Unit tests are counted as kind "unit test".
    """
    manifest = _read_artifact(settings, "manifest.json")
    project = manifest["metadata"].get("project_name") or "payments"
    project_tests = {
        macro["name"].removeprefix("test_")
        for macro in manifest["macros"].values()
        if macro["package_name"] == project and macro["name"].startswith("test_")
    }
    counts: dict[tuple[str, str], int] = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] != "test":
            continue
        metadata = node.get("test_metadata")
        if metadata is None:
            key = ("singular", "this project")
        elif metadata.get("namespace"):
            key = (metadata["name"], metadata["namespace"])
        elif metadata["name"] in project_tests:
            key = (metadata["name"], "this project")
        else:
            key = (metadata["name"], "dbt")
        counts[key] = counts.get(key, 0) + 1
    unit_tests = len(manifest.get("unit_tests", {}))
    if unit_tests:
        counts[("unit test", "this project")] = unit_tests

    frame = pd.DataFrame(
        [(kind, defined_in, tests) for (kind, defined_in), tests in counts.items()],
        columns=["kind", "defined_in", "tests"],
    )
    return frame.sort_values(["defined_in", "kind"]).reset_index(drop=True)


def show(settings: Settings, sql: str) -> pd.DataFrame:
    """Compile one SELECT with dbt (ref and source work in it), run it and return all rows.

    This is `dbt show --inline`: nothing is written to the warehouse. dbt
    returns numbers as floats and dates as ISO strings. Raises DbtError with
    dbt's message when the SQL does not compile or run.
    """
    result = run(settings, "show", "--inline", sql, "--limit", "-1", "--output", "json", "--quiet")
    if result.exit_code != 0:
        raise DbtError(f"dbt show failed (exit code {result.exit_code}):\n{result.output[-3000:]}")
    start = result.output.find("{")
    try:
        document, _ = json.JSONDecoder().raw_decode(result.output, max(start, 0))
        rows = document["show"]
    except (ValueError, KeyError, TypeError):
        rows = None
    if rows is None:
        raise DbtError(f"dbt show printed no JSON result:\n{result.output[-3000:]}")
    return pd.DataFrame(rows)


def model_properties(model: str) -> dict[str, Any]:
    """Return a model's entry of the YAML files in dbt/models: description, columns, tests.

    Raises KeyError when no YAML file describes the model.
    """
    for path in sorted((PROJECT_DIR / "models").rglob("*.yml")):
        document = yaml.safe_load(path.read_text()) or {}
        for entry in document.get("models") or []:
            if entry.get("name") == model:
                return entry
    raise KeyError(f"no YAML file in {PROJECT_DIR / 'models'} describes the model {model!r}")


def declared_tests(model: str) -> pd.DataFrame:
    """Return one row per data test that the model's YAML declares, in file order.

    Columns: column (empty for a test of the whole model), test (the generic
    test's name), arguments (written as name=value pairs) and severity (error
    unless the test's config lowers it to warn).
    """
    properties = model_properties(model)
    rows = [("", test) for test in properties.get("data_tests") or []]
    for column in properties.get("columns") or []:
        rows += [(column["name"], test) for test in column.get("data_tests") or []]

    frame_rows = []
    for column, test in rows:
        if isinstance(test, str):
            name, options = test, {}
        else:
            ((name, options),) = test.items()
            options = options or {}
        frame_rows.append(
            {
                "column": column,
                "test": name,
                "arguments": _format_arguments(options.get("arguments") or {}),
                "severity": (options.get("config") or {}).get("severity", "error"),
            }
        )
    return pd.DataFrame(frame_rows, columns=["column", "test", "arguments", "severity"])


def _format_arguments(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in arguments.items())
