"""Figures with their references and targets, rendered as Markdown tables."""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.stats import Summary, ratio, summarize

_COMPARISONS = {">=": operator.ge, "<": operator.lt}
# Everything up to a package's folder in a profiler's file names: site-packages,
# a source tree's src, or the standard library.
_PATH_PREFIX = re.compile(r"/\S*/(?:site-packages|src|lib/python3\.\d+)/")


@dataclass(frozen=True)
class Target:
    """A threshold on a figure's median ("value") or on its ratio to the reference ("ratio")."""

    on: str
    comparison: str
    threshold: float
    text: str

    def is_met(self, value: float, value_ratio: float | None) -> bool | None:
        """Return whether the target holds, or None when its ratio cannot be computed."""
        measured = value if self.on == "value" else value_ratio
        if measured is None:
            return None
        return _COMPARISONS[self.comparison](measured, self.threshold)


@dataclass
class Figure:
    """One measured figure: a sample per run, and optionally a reference and a target."""

    name: str
    unit: str
    samples: list[float]
    reference: str = ""
    reference_samples: list[float] = field(default_factory=list)
    target: Target | None = None
    digits: int = 0

    @property
    def summary(self) -> Summary:
        return summarize(self.samples)

    @property
    def ratio(self) -> float | None:
        if not self.reference_samples:
            return None
        return ratio(self.summary.median, summarize(self.reference_samples).median)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.is_met(self.summary.median, self.ratio)


def format_number(value: float, digits: int = 0) -> str:
    """Format with thousands separators and the given number of decimals."""
    return f"{value:,.{digits}f}"


def format_summary(summary: Summary, unit: str, digits: int = 0) -> str:
    """Render "median unit (min–max)"; a single run shows no spread."""
    text = f"{format_number(summary.median, digits)} {unit}".rstrip()
    if summary.runs > 1:
        spread = f"{format_number(summary.minimum, digits)}–{format_number(summary.maximum, digits)}"
        text += f" ({spread})"
    return text


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "—"}[met]


def short_paths(text: str) -> str:
    """Cut file names in profiler output down to the package path, such as kafka/future.py."""
    return _PATH_PREFIX.sub("", text)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a Markdown table; a pipe inside a cell is escaped."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    lines = [line(header), line(["---"] * len(header))]
    lines.extend(line(row) for row in rows)
    return "\n".join(lines)


def figure_table(figures: Sequence[Figure]) -> str:
    """Render figures with their reference, ratio, target and verdict."""
    rows = []
    for figure in figures:
        reference = "—"
        if figure.reference_samples:
            reference_summary = summarize(figure.reference_samples)
            reference = (
                f"{figure.reference}: "
                f"{format_summary(reference_summary, figure.unit, figure.digits)}"
            )
        elif figure.reference:
            reference = figure.reference
        value_ratio = figure.ratio
        rows.append([
            figure.name,
            format_summary(figure.summary, figure.unit, figure.digits),
            reference,
            "—" if value_ratio is None else f"{value_ratio:.2f}",
            figure.target.text if figure.target else "—",
            verdict(figure.met),
        ])
    header = ["figure", "median (min–max)", "reference", "ratio", "target", "verdict"]
    return table(header, rows)
