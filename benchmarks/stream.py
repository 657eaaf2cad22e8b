"""Stream throughput: the lab's fraud query drains a filled topic with --available-now.

Each run starts streaming.start with a fresh checkpoint over the same topic
and times it from start to termination, that is from the first Kafka read to
the last committed row, fraud rules included. The reference is Spark's Kafka
source alone, read into the noop sink under the same trigger: the ratio is the
share of Spark's read rate that validation, rules and the PostgreSQL load leave.

Memory is measured on separate runs of `labkit stream --available-now`, the
command a learner runs, in a process of its own: the benchmark's process also
contains the generated messages and the reference queries.
"""

from __future__ import annotations

import cProfile
import io
import logging
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any
from unittest import mock

from pyspark.sql import SparkSession

from benchmarks.memory import PeakMemory, service_groups, stream_process_groups
from benchmarks.render import Figure, Target, short_paths, table
from labkit import lab, producer, streaming, warehouse
from labkit.config import Settings

log = logging.getLogger(__name__)

SEED = 23
# Spark's per-trigger durations (StreamingQueryProgress.durationMs), in the order they happen.
DURATION_KEYS = (
    "latestOffset", "queryPlanning", "getBatch", "walCommit", "addBatch", "commitOffsets",
    "triggerExecution",
)
_SESSION_START = """
import time
from labkit import config, streaming
started = time.perf_counter()
streaming.spark_session(config.load()).stop()
print(time.perf_counter() - started)
"""


def spark_start_seconds() -> float:
    """Start and stop a Spark session in a new Python process; return the start's seconds."""
    result = subprocess.run(
        [sys.executable, "-c", _SESSION_START], capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def fill_topic(settings: Settings, count: int) -> None:
    """Empty the lab, then produce count generated transactions with the lab's producer."""
    lab.reset(settings)
    result = producer.produce_generated(settings, count=count, seed=SEED)
    if result.delivered != count:
        raise RuntimeError(f"filling the topic delivered {result.delivered} of {count}")


def _empty_facts(settings: Settings) -> None:
    with warehouse.connect(settings) as conn, conn.cursor() as cur:
        cur.execute("truncate fact_transaction, duplicate_message, quarantine, stream_batch")
    conn.close()


def _loaded(settings: Settings) -> int:
    frame = warehouse.query(settings, "select count(*) as n from fact_transaction")
    return int(frame["n"].iloc[0])


def drain_once(spark: SparkSession, settings: Settings, query_name: str) -> tuple[float, list]:
    """Run the lab's query with availableNow under a fresh checkpoint; return seconds, progress."""
    _empty_facts(settings)
    shutil.rmtree(settings.checkpoint_dir / query_name, ignore_errors=True)
    started = time.perf_counter()
    query = streaming.start(spark, settings, available_now=True, query_name=query_name)
    query.awaitTermination()
    seconds = time.perf_counter() - started
    if query.exception() is not None:
        raise RuntimeError(f"query {query_name} failed: {query.exception()}")
    shutil.rmtree(settings.checkpoint_dir / query_name, ignore_errors=True)
    return seconds, query.recentProgress


def noop_once(spark: SparkSession, settings: Settings) -> float:
    """Read the topic with the lab's Kafka source into Spark's noop sink; return seconds."""
    raw = streaming.read_transactions(spark, settings)
    with tempfile.TemporaryDirectory(dir=settings.home) as checkpoint:
        started = time.perf_counter()
        query = (
            raw.writeStream.format("noop").trigger(availableNow=True)
            .option("checkpointLocation", checkpoint).start()
        )
        query.awaitTermination()
        return time.perf_counter() - started


def stream_process_memory(settings: Settings, count: int, number: int) -> PeakMemory:
    """Run `labkit stream --available-now` over the filled topic; return the lab's memory peaks."""
    _empty_facts(settings)
    query_name = f"bench_memory_{number}"
    shutil.rmtree(settings.checkpoint_dir / query_name, ignore_errors=True)
    environment = {**os.environ, "LAB_QUERY_NAME": query_name, "TQDM_DISABLE": "1"}
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / f"bench-stream-memory-{number}.log"
    with open(log_path, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "labkit.cli", "stream", "--available-now"],
            env=environment, stdout=output, stderr=subprocess.STDOUT,
        )
        groups = {**service_groups(settings), **stream_process_groups(process.pid)}
        with PeakMemory(groups) as memory:
            process.wait()
    shutil.rmtree(settings.checkpoint_dir / query_name, ignore_errors=True)
    if process.returncode != 0:
        raise RuntimeError(f"labkit stream failed with exit code {process.returncode}; "
                           f"see {log_path}")
    if _loaded(settings) != count:
        raise RuntimeError(f"labkit stream loaded {_loaded(settings)} of {count} rows")
    return memory


def progress_table(progress: list[Any]) -> str:
    """Sum Spark's per-trigger durations over one run's progress events, in seconds."""
    totals = dict.fromkeys(DURATION_KEYS, 0.0)
    rows = 0
    for event in progress:
        rows += event.numInputRows
        for key in DURATION_KEYS:
            totals[key] += event.durationMs.get(key, 0) / 1000
    lines = [[f"`{key}`", f"{seconds:.2f}"] for key, seconds in totals.items()]
    lines.append(["micro-batches, input rows", f"{len(progress)}, {rows:,}"])
    return table(["Spark progress duration (summed over batches)", "seconds"], lines)


def profile_sink(spark: SparkSession, settings: Settings) -> str:
    """Run the query once more with cProfile around each call of its foreachBatch function.

    The function runs in a py4j callback thread, so the profiler is switched on
    and off inside it; streaming.start looks postgres_sink up when it is called,
    which lets the benchmark wrap it without touching the lab's code.
    """
    profile = cProfile.Profile()
    make_sink = streaming.postgres_sink

    def profiled_sink(*args: Any, **kwargs: Any):
        sink = make_sink(*args, **kwargs)

        def call(batch, batch_id: int) -> None:
            profile.enable()
            try:
                sink(batch, batch_id)
            finally:
                profile.disable()

        return call

    with mock.patch.object(streaming, "postgres_sink", profiled_sink):
        seconds, _ = drain_once(spark, settings, "bench_stream_profile")

    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(18)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    body = short_paths("\n".join(line.rstrip() for line in lines[start:] if line.strip()))
    return (
        f"cProfile of the foreachBatch function over one more run ({seconds:.1f} s wall), "
        f"by cumulative time:\n\n```\n{body}\n```"
    )


def run(
    spark: SparkSession, settings: Settings, count: int, runs: int
) -> tuple[list[Figure], list[Figure], str]:
    """Return the throughput figure, the memory figures and, if missed, a profile."""
    fill_topic(settings, count)
    lab_rates, noop_rates, progress = [], [], []
    for number in range(1, runs + 1):
        noop_rates.append(count / noop_once(spark, settings))
        seconds, progress = drain_once(spark, settings, f"bench_stream_{number}")
        if _loaded(settings) != count:
            raise RuntimeError(f"run {number} loaded {_loaded(settings)} of {count} rows")
        lab_rates.append(count / seconds)
        log.info(
            "stream run %d: lab query %.0f tx/s, noop sink %.0f tx/s",
            number, lab_rates[-1], noop_rates[-1],
        )

    peaks: dict[str, list[float]] = {}
    for number in range(1, runs + 1):
        memory = stream_process_memory(settings, count, number)
        for name, peak in memory.peaks.items():
            peaks.setdefault(name, []).append(peak / 2**20)
        peaks.setdefault("whole lab", []).append(memory.peak_total / 2**20)
        log.info(
            "memory run %d: lab peak %.0f MiB (%s)", number, memory.peak_total / 2**20,
            ", ".join(f"{name} {peak / 2**20:.0f}" for name, peak in memory.peaks.items()),
        )

    figure = Figure(
        f"fraud query, --available-now over {count:,} messages", "tx/s", lab_rates,
        reference="Kafka source into the noop sink", reference_samples=noop_rates,
        target=Target("value", ">=", 20_000, "≥ 20,000 tx/s"),
    )
    memory_figures = [
        Figure(f"peak PSS: {name}", "MiB", values) for name, values in peaks.items()
    ]
    memory_figures[-1].reference = "target"
    memory_figures[-1].target = Target("value", "<", 3 * 1024, "< 3 GiB (3,072 MiB)")

    profile = ""
    if not figure.met:
        profile = (
            "Spark's progress events of the last run:\n\n" + progress_table(progress)
            + "\n\n" + profile_sink(spark, settings)
        )
    return [figure], memory_figures, profile
