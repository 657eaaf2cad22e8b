"""Shared pytest set-up for tests/ and for the notebooks that nbval runs.

Tests run on a test lab of their own (its own folder and ports), so running them
never touches the data of a learner's lab. Variables already set in the
environment win, which lets the tests run against the compose lab too.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent

TEST_LAB_ENVIRONMENT = {
    "LAB_HOME": str(ROOT / ".lab" / "test"),
    # The jars are the same for every lab; resolve them once.
    "LAB_JARS_DIR": str(ROOT / ".lab" / "jars"),
    "LAB_KAFKA_BOOTSTRAP": "127.0.0.1:19092",
    "LAB_KAFKA_CONTROLLER_PORT": "19093",
    "LAB_PG_PORT": "15432",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
}
for name, value in TEST_LAB_ENVIRONMENT.items():
    os.environ.setdefault(name, value)


def pytest_sessionfinish(session, exitstatus):
    """Stop the test lab after the run, unless LAB_KEEP_RUNNING=1 keeps it for the next one."""
    if os.environ.get("LAB_KEEP_RUNNING") == "1":
        return
    if os.environ["LAB_HOME"] != TEST_LAB_ENVIRONMENT["LAB_HOME"]:
        return  # a lab the tests did not start is left as it is

    from labkit import config, lab

    settings = config.load()
    if settings.mode == "native":
        lab.down(settings)
