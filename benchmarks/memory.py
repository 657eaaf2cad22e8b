"""Peak memory of the lab's services, sampled in a background thread with psutil.

Memory is PSS (proportional set size): a process's resident pages, with each
page that several processes share split among them. Summed RSS would count
PostgreSQL's shared buffers once per server process, and the pages that
PySpark's Python workers share with the daemon they fork from once per worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import psutil

from benchmarks.background import BackgroundLoop
from labkit.config import Settings

# Seconds between two samples. Reading PSS takes about 70 ms for the lab's 15
# processes, so a shorter interval would slow what it measures.
INTERVAL = 1.0


def _pid_from_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _tree(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _spark_driver() -> list[psutil.Process]:
    # PySpark starts the driver JVM as a child of this Python process, and the
    # JVM starts the Python workers that run the card-state function.
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == "java":
                found += _tree(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a child that exited since the listing, such as the producer
    return found


def stream_process_groups(pid: int) -> dict[str, Callable[[], list[psutil.Process]]]:
    """Return the parts of a `labkit stream` process tree: driver, JVM and Python workers."""

    def part(expected_kind: str) -> Callable[[], list[psutil.Process]]:
        def processes() -> list[psutil.Process]:
            found = []
            for process in _tree(pid):
                try:
                    if process.name() == "java":
                        kind = "JVM"
                    elif "pyspark.daemon" in " ".join(process.cmdline()):
                        kind = "workers"
                    else:
                        kind = "driver"
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if kind == expected_kind:
                    found.append(process)
            return found
        return processes

    return {
        "labkit stream: Python driver": part("driver"),
        "labkit stream: Spark JVM": part("JVM"),
        "labkit stream: Spark's Python workers": part("workers"),
    }


def service_groups(settings: Settings) -> dict[str, Callable[[], list[psutil.Process]]]:
    """Return, for Kafka and PostgreSQL, a function listing the service's processes."""
    kafka_pid_file = settings.home / "kafka" / "kafka.pid"
    # The first line of postmaster.pid is the pid of the server's main process.
    postgres_pid_file = settings.home / "postgres" / "data" / "postmaster.pid"
    return {
        "Kafka broker JVM": lambda: _tree(_pid_from_file(kafka_pid_file)),
        "PostgreSQL processes": lambda: _tree(_pid_from_file(postgres_pid_file)),
    }


def this_process_groups() -> dict[str, Callable[[], list[psutil.Process]]]:
    """Return the groups of a Spark session in this process: its JVM and workers, and itself."""
    return {
        "Spark driver JVM and its Python workers": _spark_driver,
        "benchmark Python (Spark's Python driver)": lambda: [psutil.Process(os.getpid())],
    }


def _pss(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class PeakMemory(BackgroundLoop):
    """Sample each group's summed PSS until stopped; keep each group's peak and the total's."""

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]]) -> None:
        self.groups = groups
        self.peaks = dict.fromkeys(groups, 0)
        self.peak_total = 0
        super().__init__("memory-sampler")

    def _run(self) -> None:
        while True:
            total = 0
            for name, list_processes in self.groups.items():
                used = _pss(list_processes())
                self.peaks[name] = max(self.peaks[name], used)
                total += used
            self.peak_total = max(self.peak_total, total)
            if self._stop.wait(INTERVAL):
                return
