"""The streaming fraud query: Kafka -> validation -> card state -> fraud rules -> Postgres.

Run it with `labkit stream --available-now` (process what the topic holds, then
stop) or `labkit stream` (run until interrupted). Each step is a function that
notebook 02 calls one at a time.

Test hook: when LAB_FAULT_KILL_AFTER_BATCH is set to a batch id, the sink sends
SIGKILL to its own process group right after that batch's PostgreSQL transaction
has committed, before Spark records the batch in the checkpoint. Recovery tests
and notebook 08 use it to crash the query at exactly that point.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from labkit import checkpoints, features, jars, warehouse
from labkit.config import Settings
from labkit.processes import LabError
from labkit.rules import DEFAULT_RULES, Rule, apply_rules
from labkit.validation import validate

T = TypeVar("T")

log = logging.getLogger(__name__)

# The default query name; settings.query_name (LAB_QUERY_NAME) overrides it.
QUERY_NAME = "fraud_transactions"
# The environment variable of the sink's test hook (see the module docstring).
FAULT_KILL_AFTER_BATCH = "LAB_FAULT_KILL_AFTER_BATCH"
# Seconds before the first retry of a failed PostgreSQL load; each retry doubles it.
RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 10.0
# Timestamps leave Spark as ISO-8601 text in UTC, so no Python time zone can shift them.
_TIMESTAMP_TEXT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"


def spark_session(settings: Settings, app_name: str = "payments-lab") -> SparkSession:
    """Start (or reuse) a local Spark session with the Kafka connector, bound to loopback."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Without this Spark binds to the first non-loopback interface it finds.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (
        SparkSession.builder.appName(app_name)
        .master(os.environ.get("LAB_SPARK_MASTER", "local[2]"))
        .config("spark.jars", jars.spark_jars(settings))
        .config("spark.driver.memory", os.environ.get("LAB_SPARK_DRIVER_MEMORY", "1g"))
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Scratch files stay in the lab's folder: a killed JVM cannot clean up.
        .config("spark.local.dir", str(settings.home / "spark-scratch"))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
        # PySpark 4.2's pandas serializer warns for every card whose state
        # function returns all-null feature columns, which would flood the log.
        .config("spark.executorEnv.PYTHONWARNINGS",
                "ignore::FutureWarning:pyspark.sql.pandas.serializers")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark


def spark_session_logging_to_file(settings: Settings) -> SparkSession:
    """Start Spark as spark_session does, with the JVM's standard error in logs/spark-jvm.log.

    Jupyter copies whatever the kernel process writes to its standard error into
    the cell's output. The JVM inherits descriptor 2 when it starts, so pointing
    that descriptor at a file during the start keeps the JVM's warnings out of
    the notebook for the JVM's whole life.
    """
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    kernel_stderr = os.dup(2)
    with open(settings.logs_dir / "spark-jvm.log", "ab") as jvm_log:
        os.dup2(jvm_log.fileno(), 2)
        try:
            return spark_session(settings)
        finally:
            os.dup2(kernel_stderr, 2)
            os.close(kernel_stderr)


def read_transactions(spark: SparkSession, settings: Settings) -> DataFrame:
    """Return the topic as a streaming DataFrame of raw Kafka records, from the earliest offset.

    settings.max_offsets_per_trigger, when set, caps the offsets one micro-batch reads.
    """
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", settings.topic)
        .option("startingOffsets", "earliest")
        # A topic that lost offsets the checkpoint remembers stops the query
        # instead of skipping data; checkpoints.verify_topic covers the cases
        # that this option misses.
        .option("failOnDataLoss", "true")
        # A fetch that finds no new records waits at the broker for up to this
        # long (500 ms by default), and a task reading a small range waited on
        # such fetches. 50 ms cut a small micro-batch's read from 650 to 130 ms.
        .option("kafka.fetch.max.wait.ms", "50")
    )
    if settings.max_offsets_per_trigger is not None:
        reader = reader.option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
    return reader.load()


def merchant_locations(spark: SparkSession, settings: Settings) -> DataFrame:
    """Return dim_merchant's (merchant_id, latitude, longitude) as a small static DataFrame.

    The query reads it once, when it starts: a merchant added later has no
    location until the query restarts, so impossible_travel cannot fire there.
    """
    try:
        with closing(warehouse.connect(settings)) as conn:
            rows = warehouse.merchant_locations(conn)
    except psycopg2.OperationalError as error:
        raise LabError(
            f"cannot read merchant locations from PostgreSQL at {settings.pg_host}:"
            f"{settings.pg_port} ({str(error).strip()}); start the lab with 'labkit lab up'"
        ) from None
    return spark.createDataFrame(
        rows, "merchant_id string, latitude decimal(9,6), longitude decimal(9,6)"
    )


def card_features(raw: DataFrame, merchants: DataFrame) -> DataFrame:
    """Validate raw Kafka records, add merchant locations, then the card features from state."""
    located = features.with_merchant_locations(validate(raw), merchants)
    return features.with_card_features(located)


def _as_text(column: str) -> F.Column:
    return F.date_format(F.col(column), _TIMESTAMP_TEXT).alias(column)


def _event_time(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _fact_rows(scored: DataFrame) -> DataFrame:
    columns = [
        _as_text(name) if name in ("event_time", "kafka_timestamp") else F.col(name)
        for name in warehouse.FACT_COLUMNS
    ]
    return scored.where("reject_reason is null").select(*columns)


def _fault_batch_id() -> int | None:
    raw = os.environ.get(FAULT_KILL_AFTER_BATCH, "").strip()
    if not raw:
        return None
    try:
        batch_id = int(raw)
    except ValueError:
        raise ValueError(f"{FAULT_KILL_AFTER_BATCH} must be a batch id, got {raw!r}") from None
    if os.getpgrp() != os.getpid():
        # Killing a group this process does not lead could kill the shell that started it.
        raise LabError(
            f"{FAULT_KILL_AFTER_BATCH} needs the stream to lead its own process group; "
            "start it with setsid, or from Python with start_new_session=True"
        )
    log.warning("test hook: the process group dies after batch %d is loaded", batch_id)
    return batch_id


class _PostgresSink:
    """The foreachBatch function: score a micro-batch, load it, retry a lost connection."""

    def __init__(self, settings: Settings, query_name: str, rules: Sequence[Rule]) -> None:
        self.settings = settings
        self.query_name = query_name
        self.rules = rules
        self.connection: Any = None
        self.fault_batch_id = _fault_batch_id()

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        started_at = datetime.now(UTC).isoformat()
        # Scoring reads the batch twice; caching it keeps the card state from running twice.
        batch.persist()
        try:
            # The first read brings the payments' ids, which scoring needs, and
            # the rejected messages; each Spark job adds to the batch's latency.
            outline = batch.select(
                "transaction_id", "merchant_id", F.unix_micros("event_time").alias("micros"),
                "kafka_topic", "kafka_partition", "kafka_offset", "reject_reason",
                F.when(F.col("reject_reason").isNotNull(), F.col("raw_value")).alias("raw_value"),
            ).toArrow()
            is_rejected = outline["reject_reason"].is_valid()
            quarantined = outline.filter(is_rejected).select(
                ["kafka_topic", "kafka_partition", "kafka_offset", "raw_value", "reject_reason"]
            )
            rejected = [tuple(row.values()) for row in quarantined.to_pylist()]
            scored = self._score(batch, batch_id, outline.filter(pc.invert(is_rejected)))
            # Arrow moves the valid rows to Python far faster than collect().
            valid = _fact_rows(scored).toArrow()
        finally:
            batch.unpersist()

        counts = self._retrying(
            batch_id,
            lambda conn: warehouse.load_batch(
                conn, self.query_name, batch_id, valid, rejected, started_at
            ),
        )
        log.info(
            "batch %d: %d messages, %d loaded, %d duplicates, %d quarantined, %d flagged, "
            "%d late, %.2f s",
            batch_id, counts.messages, counts.loaded, counts.duplicates, counts.quarantined,
            counts.flagged, counts.late, time.monotonic() - started,
        )
        if batch_id == self.fault_batch_id:
            log.warning(
                "test hook %s=%d: sending SIGKILL to process group %d after the load committed",
                FAULT_KILL_AFTER_BATCH, batch_id, os.getpgrp(),
            )
            os.killpg(os.getpgrp(), signal.SIGKILL)

    def _score(self, batch: DataFrame, batch_id: int, ids: pa.Table) -> DataFrame:
        """Add terminal_confirmed_frauds from the labels in PostgreSQL, then apply the rules.

        ids has the transaction_id, merchant_id and micros (event time) of the valid rows.
        """
        payments = list(zip(
            ids["transaction_id"].to_pylist(),
            ids["merchant_id"].to_pylist(),
            [_event_time(micros) for micros in ids["micros"].to_pylist()],
            strict=True,
        ))
        frauds = []
        if payments:
            first = min(event_time for _, _, event_time in payments)
            last = max(event_time for _, _, event_time in payments)
            delay = features.FEEDBACK_DELAY
            frauds = self._retrying(
                batch_id,
                lambda conn: warehouse.confirmed_frauds(
                    conn, payments, first - delay - features.FEEDBACK_WINDOW, last - delay
                ),
            )
        by_merchant: dict[str, list[datetime]] = defaultdict(list)
        for merchant_id, fraud_time in frauds:
            by_merchant[merchant_id].append(fraud_time)
        confirmed = batch.sparkSession.createDataFrame(
            list(by_merchant.items()), "merchant_id string, fraud_times array<timestamp>"
        )
        return apply_rules(features.with_terminal_feedback(batch, confirmed), self.rules)

    def _retrying(self, batch_id: int, action: Callable[[Any], T]) -> T:
        """Run action with a PostgreSQL connection, reconnecting and retrying when it is lost."""
        # Every action is one transaction and idempotent (reads, or load_batch), so
        # running it again after a lost connection is safe even when the lost
        # attempt had committed.
        attempts = self.settings.sink_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                if self.connection is None or self.connection.closed:
                    self.connection = warehouse.connect(self.settings)
                return action(self.connection)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                self._close()
                reason = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
                if attempt == attempts:
                    log.error(
                        "batch %d: PostgreSQL load failed after %d attempts: %s",
                        batch_id, attempts, reason,
                    )
                    raise LabError(
                        f"batch {batch_id} could not be loaded into PostgreSQL at "
                        f"{self.settings.pg_host}:{self.settings.pg_port} after {attempts} "
                        f"attempts ({reason}). Start PostgreSQL ('labkit lab up') and run "
                        f"'labkit stream' again: the query resumes at batch {batch_id}"
                    ) from error
                delay = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2 ** (attempt - 1))
                log.warning(
                    "batch %d: PostgreSQL load failed (attempt %d of %d): %s; retrying in %.0f s",
                    batch_id, attempt, attempts, reason, delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except psycopg2.Error as error:
                log.debug("closing a broken PostgreSQL connection failed: %s", error)
        self.connection = None


def postgres_sink(
    settings: Settings, query_name: str, rules: Sequence[Rule] = DEFAULT_RULES
) -> Callable[[DataFrame, int], None]:
    """Return a foreachBatch function that scores each micro-batch and loads it.

    The function adds the terminal feedback to the batch, applies rules and loads
    the result with warehouse.load_batch.

    The load is idempotent, so when Spark replays a batch after a crash the
    tables end up as if it had run once. A lost PostgreSQL connection is retried
    settings.sink_retries times, with a logged warning per attempt. After that
    the function raises LabError and the query stops.
    """
    return _PostgresSink(settings, query_name, rules)


def start(
    spark: SparkSession,
    settings: Settings,
    rules: Sequence[Rule] = DEFAULT_RULES,
    available_now: bool = False,
    trigger_seconds: float = 2.0,
    query_name: str | None = None,
) -> StreamingQuery:
    """Start the fraud query with its checkpoint in settings.checkpoint_dir/query_name.

    query_name defaults to settings.query_name. Raises LabError, before Spark
    starts anything, when the checkpoint does not match the topic (see
    labkit.checkpoints).
    """
    query_name = query_name or settings.query_name
    checkpoint = settings.checkpoint_dir / query_name
    checkpoints.verify_topic(settings, checkpoint)
    merchants = merchant_locations(spark, settings)
    transactions = card_features(read_transactions(spark, settings), merchants)
    writer = (
        transactions.writeStream.queryName(query_name)
        .foreachBatch(postgres_sink(settings, query_name, rules))
        .option("checkpointLocation", str(checkpoint))
    )
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{trigger_seconds} seconds")
    query = writer.start()
    log.info("started query %s (id %s)", query_name, query.id)
    return query


def run(settings: Settings, available_now: bool = False) -> None:
    """Run the fraud query until the topic is drained (available_now) or until interrupted.

    Raises LabError when the query fails, with the cause and what to do next.
    """
    # Checked before Spark starts too, so a mismatch fails in seconds, not after Spark's start.
    checkpoints.verify_topic(settings, settings.checkpoint_dir / settings.query_name)
    spark = spark_session(settings)
    try:
        query = start(spark, settings, available_now=available_now)
        try:
            query.awaitTermination()
        except KeyboardInterrupt:
            log.info("stopping query %s", query.name)
            query.stop()
        except StreamingQueryException as error:
            summary = _failure_summary(error)
            raise LabError(f"query {settings.query_name} failed: {summary}") from None
    finally:
        spark.stop()
    log.info("query %s stopped", settings.query_name)


def _failure_summary(error: StreamingQueryException) -> str:
    """Return the cause of a query failure and what to do next, without Spark's stack trace."""
    text = str(error)
    # A LabError raised in the sink arrives inside the Python traceback that Spark
    # carries, and its message already names the next step.
    marker = f"{LabError.__module__}.{LabError.__name__}: "
    if marker in text:
        return text.rsplit(marker, 1)[1].splitlines()[0].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0][:500] if lines else type(error).__name__
    return (
        f"{first}. The checkpoint ends at the last batch that completed, so once the cause "
        "is fixed, 'labkit stream' resumes there and the sink loads a replayed batch once"
    )
