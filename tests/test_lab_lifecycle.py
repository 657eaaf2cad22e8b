"""`labkit lab up/status/down` on a lab of its own, driven through the real command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from labkit.processes import port_is_free

ROOT = Path(__file__).resolve().parents[1]
LABKIT = str(Path(sys.executable).with_name("labkit"))
# Ports apart from both the learner's lab and the test lab.
KAFKA_PORT, CONTROLLER_PORT, PG_PORT, AIRFLOW_PORT = 39092, 39093, 35432, 38080
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def lab_environment(home: Path, **overrides: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        LAB_HOME=str(home),
        LAB_KAFKA_BOOTSTRAP=f"127.0.0.1:{KAFKA_PORT}",
        LAB_KAFKA_CONTROLLER_PORT=str(CONTROLLER_PORT),
        LAB_PG_PORT=str(PG_PORT),
        LAB_AIRFLOW_PORT=str(AIRFLOW_PORT),
    )
    environment.update(overrides)
    return environment


def labkit(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LABKIT, *args], env=environment, capture_output=True, text=True, timeout=300
    )


def lab_pids(home: Path) -> set[int]:
    """Return the pids of the lab's Kafka, Postgres and Airflow processes and their children."""
    roots = []
    for pid_file in [home / "kafka" / "kafka.pid", *(home / "airflow").glob("*.pid")]:
        if pid_file.exists():
            roots.append(int(pid_file.read_text()))
    postmaster = home / "postgres" / "data" / "postmaster.pid"
    if postmaster.exists():
        roots.append(int(postmaster.read_text().splitlines()[0]))

    pids = set()
    for pid in roots:
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        pids.add(pid)
        pids.update(child.pid for child in process.children(recursive=True))
    return pids


@pytest.fixture(scope="module")
def lifecycle_lab(lab_running) -> dict[str, object]:
    """A second native lab with Airflow, started with `labkit lab up`; the last test stops it."""
    home = ROOT / ".lab" / "test-lifecycle"
    shutil.rmtree(home, ignore_errors=True)
    environment = lab_environment(home)
    started = labkit(environment, "lab", "up", "--with", "airflow")
    assert started.returncode == 0, started.stderr
    yield {"home": home, "environment": environment, "pids": lab_pids(home)}
    labkit(environment, "lab", "down")


def test_status_json_reports_healthy_services(lifecycle_lab):
    result = labkit(lifecycle_lab["environment"], "lab", "status", "--json")
    state = json.loads(result.stdout)
    services = {service["name"]: service for service in state["services"]}

    assert result.returncode == 0
    assert state["healthy"] is True
    assert set(services) == {"kafka", "postgres", "airflow"}
    assert services["airflow"]["url"] == f"http://127.0.0.1:{AIRFLOW_PORT}"
    assert services["airflow"]["healthy"] is True
    assert services["kafka"]["bootstrap_servers"] == f"127.0.0.1:{KAFKA_PORT}"
    assert services["kafka"]["healthy"] is True
    assert services["postgres"]["url"] == f"postgresql://lab@127.0.0.1:{PG_PORT}/payments"
    assert services["postgres"]["healthy"] is True


def test_up_again_keeps_the_same_processes(lifecycle_lab):
    again = labkit(lifecycle_lab["environment"], "lab", "up")

    assert again.returncode == 0, again.stderr
    assert lab_pids(lifecycle_lab["home"]) == lifecycle_lab["pids"]


def test_services_listen_on_loopback_only(lifecycle_lab):
    listening = []
    for pid in lab_pids(lifecycle_lab["home"]):
        for connection in psutil.Process(pid).net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                listening.append((pid, connection.laddr.ip, connection.laddr.port))

    ports = {port for _, _, port in listening}
    assert {KAFKA_PORT, CONTROLLER_PORT, PG_PORT, AIRFLOW_PORT} <= ports
    assert [entry for entry in listening if entry[1] not in LOOPBACK] == []


def test_taken_port_gives_clear_error(lifecycle_lab):
    other_home = ROOT / ".lab" / "test-port-taken"
    shutil.rmtree(other_home, ignore_errors=True)
    # Another lab that wants the same Postgres port as the running one.
    result = labkit(lab_environment(other_home, LAB_KAFKA_BOOTSTRAP="127.0.0.1:39192",
                                    LAB_KAFKA_CONTROLLER_PORT="39193"), "lab", "up")
    shutil.rmtree(other_home, ignore_errors=True)

    assert result.returncode == 2
    assert f"port {PG_PORT} on 127.0.0.1 is taken" in result.stderr
    assert "LAB_PG_PORT" in result.stderr


def test_missing_java_gives_clear_error(tmp_path):
    environment = lab_environment(tmp_path / "lab", PATH=str(Path(sys.executable).parent))
    environment.pop("JAVA_HOME", None)
    result = labkit(environment, "lab", "up")

    assert result.returncode == 2
    assert "Java not found" in result.stderr
    assert "openjdk-17-jre-headless" in result.stderr


def test_missing_postgres_gives_clear_error(tmp_path):
    # A PATH with Java but without PostgreSQL's programs.
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "java").symlink_to(shutil.which("java"))
    environment = lab_environment(
        tmp_path / "lab",
        PATH=f"{Path(sys.executable).parent}:{tools}",
        LAB_PG_BIN=str(tmp_path / "no-postgres-here"),
    )
    environment.pop("JAVA_HOME", None)
    result = labkit(environment, "lab", "up")

    assert result.returncode == 2
    assert "PostgreSQL server programs (initdb, pg_ctl) not found" in result.stderr


def test_down_leaves_no_lab_process(lifecycle_lab):
    pids = lab_pids(lifecycle_lab["home"])
    assert pids, "the lab should be running before down"

    result = labkit(lifecycle_lab["environment"], "lab", "down")
    alive = [pid for pid in pids if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]

    assert result.returncode == 0, result.stderr
    assert alive == []
    assert port_is_free("127.0.0.1", KAFKA_PORT)
    assert port_is_free("127.0.0.1", PG_PORT)
    assert port_is_free("127.0.0.1", AIRFLOW_PORT)
