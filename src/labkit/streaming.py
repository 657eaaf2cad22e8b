"""The streaming fraud query: Kafka -> validation -> fraud rules -> Postgres.

Run it with `labkit stream --available-now` (process what the topic holds, then
stop) or `labkit stream` (run until interrupted). Each step is a function that
notebook 02 calls one at a time.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from labkit import jars, warehouse
from labkit.config import Settings
from labkit.rules import DEFAULT_RULES, Rule, apply_rules
from labkit.validation import validate

log = logging.getLogger(__name__)

QUERY_NAME = "fraud_transactions"
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
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark


def read_transactions(spark: SparkSession, settings: Settings) -> DataFrame:
    """Return the topic as a streaming DataFrame of raw Kafka records, from the earliest offset."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", settings.topic)
        .option("startingOffsets", "earliest")
        # A topic that lost offsets the checkpoint remembers stops the query
        # instead of skipping data.
        .option("failOnDataLoss", "true")
        .load()
    )


def score_transactions(raw: DataFrame, rules: Sequence[Rule] = DEFAULT_RULES) -> DataFrame:
    """Validate raw Kafka records and apply the fraud rules to the valid ones."""
    return apply_rules(validate(raw), rules)


def _as_text(column: str) -> F.Column:
    return F.date_format(F.col(column), _TIMESTAMP_TEXT).alias(column)


def _rows_for_postgres(scored: DataFrame) -> DataFrame:
    columns = [
        _as_text(name) if name in ("event_time", "kafka_timestamp") else F.col(name)
        for name in warehouse.FACT_COLUMNS
    ]
    return scored.select("reject_reason", "raw_value", *columns)


def postgres_sink(settings: Settings, query_name: str) -> Callable[[DataFrame, int], None]:
    """Return a foreachBatch function that loads each micro-batch with warehouse.load_batch.

    The load is idempotent, so when Spark replays a batch after a crash the
    tables end up as if it had run once.
    """
    connection = None

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        nonlocal connection
        started = time.monotonic()
        started_at = datetime.now(UTC).isoformat()
        valid, rejected = [], []
        for row in _rows_for_postgres(batch).collect():
            if row.reject_reason is None:
                valid.append(tuple(row[name] for name in warehouse.FACT_COLUMNS))
            else:
                rejected.append(
                    (row.kafka_topic, row.kafka_partition, row.kafka_offset,
                     bytes(row.raw_value) if row.raw_value is not None else None,
                     row.reject_reason)
                )

        if connection is None or connection.closed:
            connection = warehouse.connect(settings)
        counts = warehouse.load_batch(connection, query_name, batch_id, valid, rejected, started_at)
        log.info(
            "batch %d: %d messages, %d loaded, %d duplicates, %d quarantined, %d flagged, %.2f s",
            batch_id, counts.messages, counts.loaded, counts.duplicates, counts.quarantined,
            counts.flagged, time.monotonic() - started,
        )

    return write_batch


def start(
    spark: SparkSession,
    settings: Settings,
    rules: Sequence[Rule] = DEFAULT_RULES,
    available_now: bool = False,
    trigger_seconds: float = 2.0,
    query_name: str = QUERY_NAME,
) -> StreamingQuery:
    """Start the fraud query with its checkpoint in settings.checkpoint_dir/query_name."""
    scored = score_transactions(read_transactions(spark, settings), rules)
    writer = (
        scored.writeStream.queryName(query_name)
        .foreachBatch(postgres_sink(settings, query_name))
        .option("checkpointLocation", str(settings.checkpoint_dir / query_name))
    )
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{trigger_seconds} seconds")
    query = writer.start()
    log.info("started query %s (id %s)", query_name, query.id)
    return query


def run(settings: Settings, available_now: bool = False) -> None:
    """Run the fraud query until the topic is drained (available_now) or until interrupted."""
    spark = spark_session(settings)
    query = start(spark, settings, available_now=available_now)
    try:
        query.awaitTermination()
    except KeyboardInterrupt:
        log.info("stopping query %s", query.name)
        query.stop()
    finally:
        spark.stop()
    log.info("query %s stopped", QUERY_NAME)
