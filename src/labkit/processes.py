"""Small helpers for the native lab's local processes: ports, pid files and waiting."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class LabError(RuntimeError):
    """A lab service could not be started, reached or stopped; the message tells what to do."""


def port_is_free(host: str, port: int) -> bool:
    """Return True when nothing listens on host:port, by trying to bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def accepts_connections(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_pid(pid_file: Path) -> int | None:
    """Return the pid stored in pid_file when that process is still alive."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def wait_until(check: Callable[[], bool], timeout: float, what: str, hint: str) -> None:
    """Poll check() until it returns True; after timeout seconds raise LabError with the hint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise LabError(f"{what} did not become healthy within {timeout:.0f} s; {hint}")


def _reap(pid: int) -> None:
    # A service started by this same Python process stays a zombie, and so
    # looks alive, until it is waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_process_group(pid: int, name: str, timeout: float = 30.0) -> None:
    """Send SIGTERM to the process group of pid, then SIGKILL if it outlives timeout."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            log.info("%s (pid %d) stopped", name, pid)
            return
        time.sleep(0.2)

    log.warning("%s (pid %d) ignored SIGTERM for %.0f s; sending SIGKILL", name, pid, timeout)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
