"""Measure the native lab and write docs/benchmarks.md: python -m benchmarks [--quick].

Every address comes from labkit's settings (the LAB_* variables), so the
benchmarks run against whichever lab those point at. They reset that lab's
topic and tables: point them at a lab whose data you can lose.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import machine, messages, render
from benchmarks.render import Figure
from labkit import config, lab
from labkit.config import REPO_ROOT

log = logging.getLogger("benchmarks")

STAGES = ("startup", "producer", "stream", "latency", "sink")
LIMITS_FILE = Path(__file__).with_name("limits.md")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the command")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated stages to run (default: {','.join(STAGES)})")
    parser.add_argument("--notebooks", action="store_true",
                        help="also time the notebook suite under papermill (about 11 minutes)")
    parser.add_argument("--with-airflow", action="store_true",
                        help="start Airflow too in the start-up stage")
    parser.add_argument("--producer-messages", type=int, default=200_000,
                        help="messages per producer run (default 200,000)")
    parser.add_argument("--sink-rows", type=int, default=100_000,
                        help="rows per sink run (default 100,000)")
    parser.add_argument("--stream-messages", type=int, default=300_000,
                        help="messages in the topic that the stream drains (default 300,000)")
    parser.add_argument("--rates", default="1000,10000",
                        help="producer rates of the latency runs, msg/s (default 1000,10000)")
    parser.add_argument("--latency-seconds", type=float, default=30,
                        help="seconds of sending per latency run (default 30)")
    parser.add_argument("--warmup-seconds", type=float, default=10,
                        help="seconds of sending before the latency runs measure (default 10)")
    parser.add_argument("--trigger-seconds", type=float, default=0.5,
                        help="processing-time trigger of the latency runs (default 0.5; "
                             "labkit stream uses 2)")
    parser.add_argument("--notebook-transactions", type=int, default=10_000,
                        help="transaction_count given to each notebook (default 10,000)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md",
                        help="page to write (default docs/benchmarks.md)")
    return parser


def apply_quick(args: argparse.Namespace) -> None:
    args.producer_messages = min(args.producer_messages, 20_000)
    args.sink_rows = min(args.sink_rows, 10_000)
    args.stream_messages = min(args.stream_messages, 20_000)
    args.latency_seconds = min(args.latency_seconds, 5)
    args.warmup_seconds = min(args.warmup_seconds, 5)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1:
        raise SystemExit(f"--runs must be at least 1, got {args.runs}")
    stages = set(args.stages.split(","))
    unknown = stages - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    if args.quick:
        apply_quick(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("kafka", "py4j", "labkit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")

    settings = config.load()
    page = Page(args, machine.describe_machine())
    if "startup" in stages:
        from benchmarks import startup

        page.add("Start-up", startup.run_lab_up(settings, args.runs, args.with_airflow))
    else:
        lab.up(settings)
    page.versions = machine.describe_versions(settings)

    if "producer" in stages:
        page.add("Producer", *run_producer(settings, args.producer_messages, args.runs))

    spark = None
    if stages & {"stream", "latency", "sink"}:
        spark = start_spark(settings, stages, page, args.runs)
    if "stream" in stages:
        from benchmarks import stream

        figures, memory_figures, profile = stream.run(
            spark, settings, args.stream_messages, args.runs
        )
        page.add("Stream processing", figures, profile)
        page.add("Memory", memory_figures)
    if "latency" in stages:
        from benchmarks import latency

        rates = [float(rate) for rate in args.rates.split(",")]
        page.add("Latency", *latency.run(
            spark, settings, rates, args.latency_seconds, args.trigger_seconds, args.runs,
            args.warmup_seconds,
        ))
    if "sink" in stages:
        from benchmarks import sink

        world, transactions = messages.generated(args.sink_rows)
        figures, profile = sink.run(settings, world, transactions, args.runs)
        page.add("Sink", figures, profile)
    if spark is not None:
        spark.stop()

    if args.notebooks:
        from benchmarks import startup

        page.add("Notebooks", startup.run_notebooks(settings, args.notebook_transactions))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page.render())
    log.info("wrote %s", args.output)
    return 0


def run_producer(settings: config.Settings, count: int, runs: int) -> tuple[list[Figure], str]:
    """Run the producer stage; its messages are freed before the stream's memory is sampled."""
    from benchmarks import producer

    _, transactions = messages.generated(count)
    return producer.run(settings, messages.serialized(transactions), runs)


def start_spark(settings: config.Settings, stages: set[str], page: Page, runs: int):
    """Time cold Spark starts in new processes, then start this process's session."""
    from benchmarks import sink, stream
    from labkit import streaming

    start_seconds = [stream.spark_start_seconds() for _ in range(runs)]
    page.add("Spark start-up", [Figure("Spark session start (new JVM)", "s", start_seconds,
                                       digits=1)])
    if "sink" in stages:
        # The JDBC driver must be on the classpath before the JVM starts.
        os.environ["PYSPARK_SUBMIT_ARGS"] = sink.spark_submit_args(sink.postgres_jdbc_jar(settings))
    return streaming.spark_session(settings, app_name="labkit-benchmarks")


class Page:
    """The sections of docs/benchmarks.md, filled as the stages finish."""

    def __init__(self, args: argparse.Namespace, machine_facts: dict[str, str]) -> None:
        self.args = args
        self.machine = machine_facts
        self.versions: dict[str, str] = {}
        self.sections: list[tuple[str, list[Figure], str]] = []
        self.started = datetime.now(UTC)

    def add(self, title: str, figures: list[Figure], profile: str = "") -> None:
        self.sections.append((title, figures, profile))

    def render(self) -> str:
        command = shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]])
        parts = [
            "# Benchmarks",
            "",
            (
                f"Written by `{command}` on {self.started:%Y-%m-%d %H:%M} UTC. Each figure is "
                f"the median of {self.args.runs} runs unless its spread is missing (one run), "
                "with the minimum and maximum in brackets, and the reference it is compared "
                "with, measured in the same run. The ratio is the figure's median over the "
                "reference's median. The load averages below show how busy the machine was."
            ),
            "",
            "## Machine",
            "",
            render.table(["", ""], [*self.machine.items(), machine.load_average("at the end")]),
            "",
            "## Versions",
            "",
            render.table(["software", "version"], list(self.versions.items())),
            "",
            "## Targets",
            "",
            self._targets(),
        ]
        if LIMITS_FILE.exists():
            parts += ["", LIMITS_FILE.read_text().strip()]
        for title, figures, profile in self.sections:
            parts += ["", f"## {title}", "", render.figure_table(figures)]
            if profile:
                parts += ["", f"### Profile of the missed {title.lower()} target", "", profile]
        return "\n".join(parts) + "\n"

    def _targets(self) -> str:
        rows = []
        for _, figures, _ in self.sections:
            for figure in figures:
                if figure.target is None:
                    continue
                value = render.format_summary(figure.summary, figure.unit, figure.digits)
                if figure.target.on == "ratio":
                    value += f", ratio {figure.ratio:.2f} to {figure.reference}"
                rows.append([figure.name, value, figure.target.text, render.verdict(figure.met)])
        return render.table(["figure", "measured", "target", "verdict"], rows)


if __name__ == "__main__":
    sys.exit(main())
