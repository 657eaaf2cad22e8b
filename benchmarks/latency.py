"""Event-to-row latency of the fraud query while the lab's producer sends at a fixed rate.

A record's produce time is its Kafka timestamp, which kafka-python sets when
send() is called and which the stream stores in fact_transaction.kafka_timestamp.
Its commit time is when the row's micro-batch appears in stream_batch, polled
every POLL_SECONDS: loaded_at cannot serve, because PostgreSQL's now() is the
start of the load's transaction, not its commit. The row is joined to its
batch by loaded_at = stream_batch.finished_at, both now() of one transaction.

The reference is a plain kafka-python consumer in another process that reads
the same records as they arrive: the part of the latency that Kafka alone adds.

The first warm-up seconds of sending are left out of both: the first
micro-batches of a new query run slower while the JVM compiles its code, and
the backlog they leave would otherwise count against the steady state.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime

from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import SparkSession

from benchmarks.background import BackgroundLoop
from benchmarks.memory import PeakMemory, service_groups, this_process_groups
from benchmarks.render import Figure, Target, table
from benchmarks.stats import percentile
from labkit import lab, streaming, warehouse
from labkit.config import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
PERCENTILES = (0.50, 0.95, 0.99)
# Seconds the rows may take to arrive after the producer has finished.
DRAIN_TIMEOUT = 120


class CommitWatch(BackgroundLoop):
    """Record, in a background thread, the wall time at which each micro-batch becomes visible."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.seen: dict[int, float] = {}
        super().__init__("commit-watch")

    def _run(self) -> None:
        conn = warehouse.connect(self.settings)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self._stop.wait(POLL_SECONDS):
                    cur.execute(
                        "select batch_id from stream_batch where query_name = %s",
                        (self.settings.query_name,),
                    )
                    now = time.time()
                    for (batch_id,) in cur.fetchall():
                        self.seen.setdefault(batch_id, now)
        finally:
            conn.close()

    def latencies(self, produced_after: float) -> list[float]:
        """Return each row's seconds from its Kafka timestamp to its batch's commit.

        Only rows produced after produced_after (epoch seconds) count.
        """
        rows = warehouse.query(
            self.settings,
            "select extract(epoch from f.kafka_timestamp)::float8 as produced, b.batch_id "
            "from fact_transaction as f join stream_batch as b "
            "on b.query_name = %s and b.finished_at = f.loaded_at",
            (self.settings.query_name,),
        )
        return [
            self.seen[batch_id] - produced
            for produced, batch_id in zip(rows["produced"], rows["batch_id"], strict=True)
            if produced >= produced_after
        ]


def consume(bootstrap: str, topic: str, count: int, ready, results) -> None:
    """Read count new records of topic; put (timestamp, seconds to arrival) of each one."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_end()
    for partition in partitions:
        consumer.position(partition)
    ready.set()

    latencies: list[tuple[float, float]] = []
    deadline = time.monotonic() + DRAIN_TIMEOUT + count / 100
    while len(latencies) < count and time.monotonic() < deadline:
        batches = consumer.poll(timeout_ms=200)
        arrived = time.time()
        for records in batches.values():
            latencies.extend(
                (record.timestamp / 1000, arrived - record.timestamp / 1000) for record in records
            )
    consumer.close()
    results.put(latencies)


def _produce(rate: float, count: int, seed: int) -> dict[str, float]:
    # The lab's own command, in its own process, so sending competes with the
    # stream for the CPU as it does when a learner runs both.
    command = [sys.executable, "-m", "labkit.cli", "produce", "--count", str(count),
               "--rate", str(rate), "--seed", str(seed)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _wait_for_rows(settings: Settings, count: int) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        frame = warehouse.query(settings, "select count(*) as n from fact_transaction")
        if int(frame["n"].iloc[0]) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"fewer than {count} rows arrived within {DRAIN_TIMEOUT} s")


def paced_once(
    spark: SparkSession, settings: Settings, rate: float, seconds: float, trigger: float,
    warmup: float,
) -> dict[str, object]:
    """Run the query while the producer sends rate msg/s for warmup + seconds; measure the rest."""
    lab.reset(settings)
    count = int(rate * (warmup + seconds))
    query = streaming.start(spark, settings, trigger_seconds=trigger)
    try:
        while query.lastProgress is None:
            time.sleep(0.2)
        context = multiprocessing.get_context("spawn")
        ready, results = context.Event(), context.Queue()
        reader = context.Process(
            target=consume, args=(settings.kafka_bootstrap, settings.topic, count, ready, results)
        )
        reader.start()
        ready.wait(60)
        groups = {**service_groups(settings), **this_process_groups()}
        with PeakMemory(groups) as memory, CommitWatch(settings) as watch:
            measured_from = time.time() + warmup
            summary = _produce(rate, count, seed=int(rate))
            _wait_for_rows(settings, count)
            time.sleep(2 * POLL_SECONDS)
        consumer_latencies = [
            latency for produced, latency in results.get(timeout=DRAIN_TIMEOUT)
            if produced >= measured_from
        ]
        reader.join()
        # Spark keeps the last 100 progress events; the batches that read rows show
        # how long one trigger takes at this rate.
        batches = [
            event for event in query.recentProgress
            if event.numInputRows > 0 and _epoch(event.timestamp) >= measured_from
        ]
    finally:
        query.stop()
    durations = [event.durationMs["triggerExecution"] / 1000 for event in batches]
    return {
        "batch_seconds": statistics.median(durations) if durations else 0.0,
        "batches": [(event.numInputRows, dict(event.durationMs)) for event in batches],
        "stream": watch.latencies(measured_from),
        "consumer": consumer_latencies,
        "achieved_rate": summary["sent"] / summary["seconds"],
        "peak_total": memory.peak_total / 2**20,
    }


def _epoch(timestamp: str) -> float:
    # Spark gives progress timestamps in ISO-8601, in UTC with a Z.
    return datetime.fromisoformat(timestamp).timestamp()


def batch_profile(batches: list[tuple[int, dict[str, int]]]) -> str:
    """Return a table of the median input rows and phase durations of the measured batches."""
    phases = sorted({phase for _, durations in batches for phase in durations})
    rows = [["micro-batches measured", f"{len(batches)}"],
            ["input rows per micro-batch", f"{statistics.median(n for n, _ in batches):,.0f}"]]
    for phase in phases:
        seconds = statistics.median(durations.get(phase, 0) / 1000 for _, durations in batches)
        rows.append([f"`{phase}`", f"{seconds:.2f} s"])
    return (
        "Spark's progress events of the micro-batches measured at 1,000 msg/s, over all runs "
        "(medians):\n\n" + table(["micro-batch", "median"], rows)
    )


def run(
    spark: SparkSession, settings: Settings, rates: list[float], seconds: float,
    trigger: float, runs: int, warmup: float,
) -> tuple[list[Figure], str]:
    """Return p50, p95 and p99 latency figures per rate, and a profile if the target is missed."""
    figures = []
    profile = ""
    for rate in rates:
        stream: dict[float, list[float]] = {q: [] for q in PERCENTILES}
        consumer: dict[float, list[float]] = {q: [] for q in PERCENTILES}
        achieved, peaks, batch_seconds, batches = [], [], [], []
        for number in range(1, runs + 1):
            measured = paced_once(spark, settings, rate, seconds, trigger, warmup)
            for q in PERCENTILES:
                stream[q].append(percentile(measured["stream"], q))
                consumer[q].append(percentile(measured["consumer"], q))
            achieved.append(measured["achieved_rate"])
            peaks.append(measured["peak_total"])
            batch_seconds.append(measured["batch_seconds"])
            batches += measured["batches"]
            log.info(
                "latency at %.0f msg/s, run %d: p95 %.2f s (consumer %.3f s), sent %.0f msg/s",
                rate, number, stream[0.95][-1], consumer[0.95][-1], achieved[-1],
            )
        label = f"at {rate:,.0f} msg/s, trigger {trigger:g} s"
        for q in PERCENTILES:
            target = None
            if q == 0.95 and rate == 1000:
                target = Target("value", "<", 2.0, "< 2 s")
            figure = Figure(
                f"p{q * 100:.0f} event-to-row latency {label}", "s", stream[q],
                reference="plain consumer", reference_samples=consumer[q], target=target,
                digits=2,
            )
            figures.append(figure)
            if target is not None and not figure.met and batches:
                profile = batch_profile(batches)
        figures.append(Figure(
            f"producer rate achieved {label}", "msg/s", achieved,
            reference="requested", reference_samples=[rate] * runs,
        ))
        figures.append(Figure(
            f"median micro-batch duration (Spark's triggerExecution) {label}", "s",
            batch_seconds, reference="trigger interval", reference_samples=[trigger] * runs,
            digits=2,
        ))
        figures.append(Figure(f"peak PSS: whole lab {label}", "MiB", peaks))
    return figures, profile
