"""The benchmarks' pure helpers: summaries, percentiles, targets and Markdown tables."""

from __future__ import annotations

import pytest

from benchmarks import render, stats
from benchmarks.render import Figure, Target


def test_summarize_odd_runs():
    summary = stats.summarize([3.0, 1.0, 2.0])
    assert summary.median == 2.0
    assert summary.minimum == 1.0
    assert summary.maximum == 3.0
    assert summary.runs == 3


def test_summarize_even_runs_averages_middle():
    assert stats.summarize([4.0, 1.0, 3.0, 2.0]).median == 2.5


def test_summarize_rejects_no_samples():
    with pytest.raises(ValueError, match="at least one sample"):
        stats.summarize([])


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.0, 10.0), (0.5, 30.0), (0.95, 48.0), (1.0, 50.0)],
)
def test_percentile_interpolates(fraction, expected):
    assert stats.percentile([50.0, 10.0, 40.0, 20.0, 30.0], fraction) == pytest.approx(expected)


def test_percentile_single_value():
    assert stats.percentile([7.0], 0.99) == 7.0


def test_percentile_rejects_bad_fraction():
    with pytest.raises(ValueError, match="between 0 and 1"):
        stats.percentile([1.0], 95)


def test_ratio_zero_reference():
    assert stats.ratio(5.0, 0.0) is None
    assert stats.ratio(5.0, 10.0) == 0.5


def test_ratio_target_uses_reference_median():
    figure = Figure(
        "writer", "rows/s", [40.0, 50.0, 60.0], reference="COPY",
        reference_samples=[90.0, 100.0, 110.0],
        target=Target("ratio", ">=", 0.5, "≥ 0.50 of COPY"),
    )
    assert figure.ratio == 0.5
    assert figure.met is True


def test_value_target_missed():
    figure = Figure("p95", "s", [2.5, 1.0, 3.0], target=Target("value", "<", 2.0, "< 2 s"))
    assert figure.met is False


def test_figure_without_target_has_no_verdict():
    figure = Figure("start", "s", [1.0])
    assert figure.met is None
    assert figure.ratio is None


def test_format_summary_shows_spread():
    summary = stats.summarize([1500.0, 1000.0, 2000.0])
    assert render.format_summary(summary, "msg/s") == "1,500 msg/s (1,000–2,000)"


def test_format_summary_single_run_has_no_spread():
    summary = stats.summarize([1.25])
    assert render.format_summary(summary, "s", digits=1) == "1.2 s"


def test_table_escapes_pipes():
    text = render.table(["a", "b"], [["x|y", "1"]])
    assert text.splitlines() == ["| a | b |", "| --- | --- |", "| x\\|y | 1 |"]


def test_figure_table_row():
    figure = Figure(
        "producer", "msg/s", [10.0, 20.0, 30.0], reference="librdkafka",
        reference_samples=[40.0], target=Target("ratio", ">=", 0.5, "≥ 0.50"),
    )
    row = render.figure_table([figure]).splitlines()[2]
    assert row == (
        "| producer | 20 msg/s (10–30) | librdkafka: 40 msg/s | 0.50 | ≥ 0.50 | met |"
    )


def test_short_paths_keeps_package_path():
    line = (
        "/opt/venv/lib/python3.11/site-packages/kafka/future.py:119(_add_cb_eb) "
        "/usr/lib/python3.11/socket.py:692(readinto) /home/me/lab/src/labkit/warehouse.py:1(f)"
    )
    assert render.short_paths(line) == (
        "kafka/future.py:119(_add_cb_eb) socket.py:692(readinto) labkit/warehouse.py:1(f)"
    )
