"""Peak resident memory of the lab's services, sampled in a background thread with psutil."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import psutil

from benchmarks.background import BackgroundLoop
from labkit.config import Settings

# Seconds between two samples.
INTERVAL = 0.25


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
    # PySpark starts the driver JVM as a child of this Python process.
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == "java":
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a child that exited since the listing, such as the producer
    return found


def service_groups(settings: Settings) -> dict[str, Callable[[], list[psutil.Process]]]:
    """Return, per service, a function listing its processes (children included)."""
    kafka_pid_file = settings.home / "kafka" / "kafka.pid"
    # The first line of postmaster.pid is the pid of the server's main process.
    postgres_pid_file = settings.home / "postgres" / "data" / "postmaster.pid"
    return {
        "Kafka broker JVM": lambda: _tree(_pid_from_file(kafka_pid_file)),
        "PostgreSQL processes": lambda: _tree(_pid_from_file(postgres_pid_file)),
        "Spark driver JVM": _spark_driver,
        "benchmark Python (Spark's Python driver)": lambda: [psutil.Process(os.getpid())],
    }


def _rss(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class PeakMemory(BackgroundLoop):
    """Sample each group's summed RSS until stopped; keep each group's peak and the total's.

    Summed RSS counts pages that processes share (PostgreSQL's shared buffers)
    once per process, so the figures are upper bounds.
    """

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]]) -> None:
        self.groups = groups
        self.peaks = dict.fromkeys(groups, 0)
        self.peak_total = 0
        super().__init__("memory-sampler")

    def _run(self) -> None:
        while True:
            total = 0
            for name, list_processes in self.groups.items():
                used = _rss(list_processes())
                self.peaks[name] = max(self.peaks[name], used)
                total += used
            self.peak_total = max(self.peak_total, total)
            if self._stop.wait(INTERVAL):
                return
