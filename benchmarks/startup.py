"""Start-up: seconds from `labkit lab up` to each healthy service, and the notebook suite's wall time."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.render import Figure, Target
from labkit import airflow_service, kafka_broker, lab, postgres
from labkit.config import REPO_ROOT, Settings

log = logging.getLogger(__name__)

# Seconds between two health checks while `labkit lab up` runs.
POLL_SECONDS = 0.2
UP_TIMEOUT = 300
NOTEBOOK_FOLDER = REPO_ROOT / "notebooks"


def _labkit(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "labkit.cli", *arguments]


def up_once(settings: Settings, with_airflow: bool) -> dict[str, float]:
    """Stop the lab, run `labkit lab up`, and return seconds until each service was healthy.

    "labkit lab up" is the time until the command returned, which includes
    creating the topic and applying the schema.
    """
    lab.down(settings)
    checks: dict[str, Callable[[], bool]] = {
        "PostgreSQL": lambda: postgres.is_healthy(settings),
        "Kafka": lambda: kafka_broker.is_healthy(settings),
    }
    command = _labkit("lab", "up")
    if with_airflow:
        checks["Airflow"] = lambda: airflow_service.is_healthy(settings)
        command += ["--with", "airflow"]

    healthy_after: dict[str, float] = {}
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while len(healthy_after) < len(checks) or process.poll() is None:
        for name, check in checks.items():
            if name not in healthy_after and check():
                healthy_after[name] = time.perf_counter() - started
        if time.perf_counter() - started > UP_TIMEOUT:
            process.kill()
            raise RuntimeError(f"labkit lab up took longer than {UP_TIMEOUT} s")
        time.sleep(POLL_SECONDS)
    if process.returncode != 0:
        raise RuntimeError(f"labkit lab up failed:\n{process.stderr.read().decode()[-2000:]}")
    healthy_after["labkit lab up"] = time.perf_counter() - started
    return healthy_after


def run_lab_up(settings: Settings, runs: int, with_airflow: bool) -> list[Figure]:
    """Return the seconds to healthy of each service and of the whole command."""
    samples: dict[str, list[float]] = {}
    for number in range(1, runs + 1):
        for name, seconds in up_once(settings, with_airflow).items():
            samples.setdefault(name, []).append(seconds)
        log.info("lab up run %d: %s", number, {k: round(v[-1], 1) for k, v in samples.items()})
    if with_airflow:
        # Airflow's processes would take memory and CPU from every later benchmark.
        airflow_service.stop(settings)

    command = samples.pop("labkit lab up")
    figures = [
        Figure(f"`labkit lab up` to healthy: {name}", "s", values, digits=1)
        for name, values in samples.items()
    ]
    core = [max(pair) for pair in zip(samples["PostgreSQL"], samples["Kafka"], strict=True)]
    figures.append(Figure(
        "`labkit lab up` to healthy: Kafka and PostgreSQL both", "s", core, digits=1,
        reference="target", target=Target("value", "<", 30, "< 30 s"),
    ))
    name = "`labkit lab up --with airflow`" if with_airflow else "`labkit lab up`"
    figures.append(Figure(f"{name}, whole command until it returns", "s", command, digits=1))
    return figures


def run_notebooks(settings: Settings, transaction_count: int) -> list[Figure]:
    """Execute every numbered notebook with papermill into a temporary folder, timing each."""
    lab.reset(settings)
    papermill = str(Path(sys.executable).with_name("papermill"))
    figures = []
    total = 0.0
    with tempfile.TemporaryDirectory() as output:
        for notebook in sorted(NOTEBOOK_FOLDER.glob("[0-9][0-9]-*.ipynb")):
            started = time.perf_counter()
            result = subprocess.run(
                [papermill, "--cwd", ".", "-p", "transaction_count", str(transaction_count),
                 notebook.name, str(Path(output) / notebook.name)],
                cwd=NOTEBOOK_FOLDER, env=dict(os.environ), check=False,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            seconds = time.perf_counter() - started
            total += seconds
            log.info("notebook %s: %.0f s, exit code %d", notebook.name, seconds, result.returncode)
            if result.returncode != 0:
                log.error("notebook %s failed:\n%s", notebook.name, result.stderr[-2000:])
                figures.append(Figure(f"notebook {notebook.stem} (failed)", "s", [seconds]))
                return figures
            figures.append(Figure(f"notebook {notebook.stem}", "s", [seconds]))
    figures.append(Figure("whole notebook suite", "s", [total]))
    return figures
