"""A context manager that runs a sampling loop in a background thread."""

from __future__ import annotations

import threading
from typing import Self


class BackgroundLoop:
    """Run _run in a daemon thread from the start to the end of a with block.

    _run must return soon after self._stop is set; __exit__ sets it and joins.
    """

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError
