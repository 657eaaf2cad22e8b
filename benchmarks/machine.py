"""The machine and the software versions a benchmark ran on."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata

import psutil
import psycopg2

from labkit import jars, kafka_broker, warehouse
from labkit.config import REPO_ROOT, Settings

PYTHON_PACKAGES = ("pyspark", "kafka-python", "confluent-kafka", "psycopg2-binary")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _os_name() -> str:
    try:
        with open("/etc/os-release") as release:
            for line in release:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def load_average(when: str) -> tuple[str, str]:
    """Return a row of the machine table: the 1, 5 and 15 minute load averages now."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"load average (1, 5, 15 min) {when}", load


def describe_machine() -> dict[str, str]:
    return dict([
        ("CPU", _cpu_model()),
        ("cores", str(os.cpu_count())),
        ("memory", f"{psutil.virtual_memory().total / 2**30:.1f} GiB"),
        ("OS", f"{_os_name()} (Linux {platform.release()})"),
        load_average("at the start"),
    ])


def _java_version() -> str:
    result = subprocess.run(
        [kafka_broker.java_executable(), "-version"], capture_output=True, text=True, check=False
    )
    first_line = (result.stderr or result.stdout).splitlines()[0]
    return first_line.replace('"', "")


def _kafka_version(settings: Settings) -> str:
    for jar in jars.kafka_broker_dir(settings).glob("kafka_2.13-*.jar"):
        return re.sub(r"^kafka_2\.13-|\.jar$", "", jar.name)
    return "unknown"


def _postgres_version(settings: Settings) -> str:
    try:
        with warehouse.connect(settings) as conn, conn.cursor() as cur:
            cur.execute("show server_version")
            version = cur.fetchone()[0]
        conn.close()
        return version
    except psycopg2.Error:
        return "unknown (server not reachable)"


def _lab_revision() -> str:
    """Return the commit of the lab's code, noting uncommitted changes under src/."""
    def git(*arguments: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *arguments], capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "src"):
        commit += " with uncommitted changes in src/"
    return commit


def describe_versions(settings: Settings) -> dict[str, str]:
    versions = {
        "labkit (git commit)": _lab_revision(),
        "Python": platform.python_version(),
        "Java": _java_version(),
        "Kafka broker": _kafka_version(settings),
        "PostgreSQL": _postgres_version(settings),
    }
    for package in PYTHON_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
