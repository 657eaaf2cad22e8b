"""Summaries of repeated measurements: median, spread, percentiles and ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """The median of a figure's runs and their spread, from minimum to maximum."""

    median: float
    minimum: float
    maximum: float
    runs: int


def summarize(samples: Sequence[float]) -> Summary:
    """Summarize one sample per run; raises ValueError when there is none."""
    if not samples:
        raise ValueError("a figure needs at least one sample, got none")
    return Summary(statistics.median(samples), min(samples), max(samples), len(samples))


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the fraction-th percentile (0 to 1), interpolating linearly between ranks."""
    if not values:
        raise ValueError("a percentile needs at least one value, got none")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def ratio(value: float, reference: float) -> float | None:
    """Return value / reference, or None when the reference is zero."""
    if reference == 0:
        return None
    return value / reference
