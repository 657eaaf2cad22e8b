"""Sink throughput: the lab's idempotent micro-batch load against COPY and Spark's JDBC append.

All three write the same rows into a table shaped like fact_transaction: the
lab's writer (warehouse.load_batch, which the foreachBatch sink calls) into
fact_transaction itself, COPY and Spark into empty copies of it made with
`create table ... (like fact_transaction including all)`, which keeps the
primary key but not the foreign keys.

The writer and COPY start from the same Arrow table, the form in which the
stream hands a micro-batch to the writer, and both encode it with
warehouse.fact_csv. Spark starts from a cached DataFrame of the same rows.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import subprocess
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import psycopg2
import pyarrow as pa
from psycopg2.extensions import cursor as Cursor
from pyspark.sql import types as T

from benchmarks.render import Figure, Target, table
from labkit import jars, streaming, warehouse
from labkit.config import Settings
from labkit.generator import Transaction, World
from labkit.processes import LabError

log = logging.getLogger(__name__)

COPY_TABLE = "bench_copy_fact"
JDBC_TABLE = "bench_jdbc_fact"
QUERY_NAME = "bench_sink"

# Spark types of fact_transaction's columns, for the JDBC reference's DataFrame.
SPARK_TYPES = {
    "transaction_id": T.StringType(), "event_time": T.TimestampType(),
    "customer_id": T.StringType(), "card_id": T.StringType(), "merchant_id": T.StringType(),
    "amount": T.DecimalType(12, 2), "currency": T.StringType(), "channel": T.StringType(),
    "mcc": T.StringType(), "fraud_score": T.DecimalType(4, 3), "is_flagged": T.BooleanType(),
    "fraud_rules": T.ArrayType(T.StringType()),
    "card_payments_10m": T.IntegerType(), "card_prior_payments": T.IntegerType(),
    "card_mean_amount": T.DecimalType(12, 2), "travel_km": T.DecimalType(9, 1),
    "travel_kmh": T.DecimalType(10, 1), "terminal_confirmed_frauds": T.IntegerType(),
    "late_for_card_rules": T.BooleanType(),
    "kafka_topic": T.StringType(), "kafka_partition": T.IntegerType(),
    "kafka_offset": T.LongType(), "kafka_timestamp": T.TimestampType(),
}
TIMESTAMP_COLUMNS = ("event_time", "kafka_timestamp")


def postgres_jdbc_jar(settings: Settings) -> Path:
    """Return the PostgreSQL JDBC driver jar, resolving lab/maven/postgres-jdbc.pom.xml once."""
    folder = settings.jars_dir / "postgres-jdbc"
    if not any(folder.glob("postgresql-*.jar")):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LabError("Maven (mvn) not found; install it with 'apt-get install maven'")
        log.info("resolving the PostgreSQL JDBC driver into %s", folder)
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(jars.POM_FOLDER / "postgres-jdbc.pom.xml"),
             "dependency:copy-dependencies", f"-DoutputDirectory={folder}"],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise LabError(f"Maven could not resolve the JDBC driver:\n{result.stdout[-2000:]}")
    return next(folder.glob("postgresql-*.jar"))


def fact_rows(transactions: list[Transaction], topic: str) -> list[tuple]:
    """Return rows in warehouse.FACT_COLUMNS order, as the streaming sink passes them.

    Timestamps are ISO-8601 text, as the sink sends them. A column this function
    does not fill, such as a card feature, is null.
    """
    rows = []
    for offset, t in enumerate(transactions):
        # A stand-in for the streaming rules, so some rows carry a score and a rule name.
        flagged = t.amount >= 500
        values = {
            **t.to_message(),
            "amount": t.amount,
            "fraud_score": Decimal("0.600") if flagged else Decimal("0.000"),
            "is_flagged": flagged,
            "fraud_rules": ["high_amount"] if flagged else [],
            # The stream gives every valid payment a count, and the column is not null.
            "terminal_confirmed_frauds": 0,
            "late_for_card_rules": False,
            "kafka_topic": topic,
            "kafka_partition": offset % 3,
            "kafka_offset": offset,
            "kafka_timestamp": t.event_time.isoformat(),
        }
        rows.append(tuple(values.get(column) for column in warehouse.FACT_COLUMNS))
    return rows


def _truncate(settings: Settings, *tables: str) -> None:
    with warehouse.connect(settings) as conn, conn.cursor() as cur:
        cur.execute(f"truncate {', '.join(tables)}")
    conn.close()


def load_with_writer(settings: Settings, rows: pa.Table, batch_id: int) -> float:
    """Load rows as one micro-batch with warehouse.load_batch; return rows per second."""
    _truncate(settings, "fact_transaction", "duplicate_message", "stream_batch")
    conn = warehouse.connect(settings)
    try:
        started = time.perf_counter()
        counts = warehouse.load_batch(
            conn, QUERY_NAME, batch_id, rows, [], datetime.now().astimezone().isoformat()
        )
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    if counts.loaded != rows.num_rows:
        raise RuntimeError(f"the writer loaded {counts.loaded} of {rows.num_rows} rows")
    return rows.num_rows / seconds


def load_with_copy(settings: Settings, rows: pa.Table) -> float:
    """COPY rows into an empty copy of fact_transaction, CSV encoding included; return rows/s."""
    _truncate(settings, COPY_TABLE)
    conn = warehouse.connect(settings)
    try:
        started = time.perf_counter()
        with conn, conn.cursor() as cur:
            cur.copy_expert(
                f"copy {COPY_TABLE} ({', '.join(warehouse.FACT_COLUMNS)}) from stdin (format csv)",
                warehouse.fact_csv(rows),
            )
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    return rows.num_rows / seconds


def load_with_jdbc(settings: Settings, frame, count: int) -> float:
    """Append a cached DataFrame of the rows through Spark's JDBC writer; return rows/s."""
    _truncate(settings, JDBC_TABLE)
    url = f"jdbc:postgresql://{settings.pg_host}:{settings.pg_port}/{settings.pg_database}"
    properties = {
        "user": settings.pg_user,
        "password": settings.pg_password,
        "driver": "org.postgresql.Driver",
        # The driver's documented setting that turns each JDBC batch into multi-row inserts.
        "reWriteBatchedInserts": "true",
    }
    started = time.perf_counter()
    frame.write.jdbc(url, JDBC_TABLE, mode="append", properties=properties)
    return count / (time.perf_counter() - started)


class _TimingCursor(Cursor):
    """A cursor that adds each statement's wall time to a class-wide total per statement."""

    totals: ClassVar[collections.Counter[str]] = collections.Counter()

    def execute(self, query, vars=None):
        started = time.perf_counter()
        try:
            return super().execute(query, vars)
        finally:
            self._add(query, started)

    def copy_expert(self, sql, file, size=8192):
        started = time.perf_counter()
        try:
            return super().copy_expert(sql, file, size)
        finally:
            self._add(sql, started)

    def _add(self, query: str | bytes, started: float) -> None:
        text = query.decode() if isinstance(query, bytes) else query
        # The first three words name the statement and its table, so every
        # page of one execute_values call adds to the same line.
        key = " ".join(text.split()[:3])
        self.totals[key] += time.perf_counter() - started


def foreign_key_checks(settings: Settings, rows: pa.Table) -> list[list[str]]:
    """Return the time of each foreign-key check of the fact insert, from EXPLAIN ANALYZE.

    The insert runs in a transaction that is rolled back, so fact_transaction
    stays as it was.
    """
    conn = warehouse.connect(settings)
    try:
        with conn.cursor() as cur:
            warehouse.stage_facts(cur, rows)
            cur.execute("explain (analyze, format json) " + warehouse._INSERT_FACTS)
            plan = cur.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
        conn.rollback()
    finally:
        conn.close()
    return [
        [f"of which the foreign-key check `{trigger['Constraint Name']}`",
         f"{trigger['Time'] / 1000:.2f}"]
        for trigger in plan[0].get("Triggers", [])
    ]


def profile_writer(settings: Settings, rows: pa.Table) -> str:
    """Time each statement of one load_batch call, and the foreign-key checks of its insert."""
    _truncate(settings, "fact_transaction", "duplicate_message", "stream_batch")
    checks = foreign_key_checks(settings, rows)
    _TimingCursor.totals.clear()
    conn = psycopg2.connect(cursor_factory=_TimingCursor, **settings.pg_connect_kwargs())
    try:
        started = time.perf_counter()
        warehouse.load_batch(conn, QUERY_NAME, 0, rows, [], datetime.now().astimezone().isoformat())
        total = time.perf_counter() - started
    finally:
        conn.close()
    lines = [["whole load_batch call", f"{total:.2f}"]]
    for statement, seconds in _TimingCursor.totals.most_common():
        lines.append([f"`{statement} ...`", f"{seconds:.2f}"])
        if statement.startswith("insert into fact_transaction"):
            lines += checks
    python_seconds = total - sum(_TimingCursor.totals.values())
    lines.append(["Python outside the statements (encoding the CSV for COPY)",
                  f"{python_seconds:.2f}"])
    note = (
        "The foreign-key times come from `EXPLAIN ANALYZE` of the same insert in a "
        "separate transaction that was rolled back."
    )
    return table(["part of the writer's load", "seconds"], lines) + "\n\n" + note


def _spark_frame(settings: Settings, rows: list[tuple]):
    missing = [column for column in warehouse.FACT_COLUMNS if column not in SPARK_TYPES]
    if missing:
        raise LabError(f"add the Spark types of {missing} to benchmarks.sink.SPARK_TYPES")
    schema = T.StructType(
        [T.StructField(column, SPARK_TYPES[column]) for column in warehouse.FACT_COLUMNS]
    )
    positions = [warehouse.FACT_COLUMNS.index(column) for column in TIMESTAMP_COLUMNS]
    typed = []
    for row in rows:
        values = list(row)
        for position in positions:
            values[position] = datetime.fromisoformat(values[position])
        typed.append(values)
    spark = streaming.spark_session(settings)
    frame = spark.createDataFrame(typed, schema).cache()
    frame.count()
    return frame


def run(
    settings: Settings, world: World, transactions: list[Transaction], runs: int
) -> tuple[list[Figure], str]:
    """Alternate the three loads runs times; return the writer's figures and, if missed, a profile."""
    rows = fact_rows(transactions, settings.topic)
    arrow_rows = warehouse.fact_table(rows)
    with warehouse.connect(settings) as conn, conn.cursor() as cur:
        for table, kind in (("dim_customer", "customers"), ("dim_card", "cards"),
                            ("dim_merchant", "merchants")):
            warehouse.upsert_dimension(conn, table, world.rows(kind))
        for table in (COPY_TABLE, JDBC_TABLE):
            cur.execute(f"drop table if exists {table}")
            cur.execute(f"create table {table} (like fact_transaction including all)")
    conn.close()

    frame = _spark_frame(settings, rows)
    writer, copy, jdbc = [], [], []
    try:
        for number in range(1, runs + 1):
            writer.append(load_with_writer(settings, arrow_rows, number))
            copy.append(load_with_copy(settings, arrow_rows))
            jdbc.append(load_with_jdbc(settings, frame, len(rows)))
            log.info(
                "sink run %d: writer %.0f rows/s, COPY %.0f rows/s, JDBC %.0f rows/s",
                number, writer[-1], copy[-1], jdbc[-1],
            )
    finally:
        frame.unpersist()
        with warehouse.connect(settings) as conn, conn.cursor() as cur:
            cur.execute(f"drop table if exists {COPY_TABLE}, {JDBC_TABLE}")
        conn.close()
    name = f"idempotent writer, one batch of {len(rows):,} rows"
    figures = [
        Figure(name, "rows/s", writer, reference="COPY", reference_samples=copy,
               target=Target("ratio", ">=", 0.5, "≥ 0.50 of COPY")),
        Figure(name, "rows/s", writer, reference="Spark JDBC append", reference_samples=jdbc),
    ]
    profile = "" if figures[0].met else profile_writer(settings, arrow_rows)
    return figures, profile


def spark_submit_args(jar: Path) -> str:
    """Return PYSPARK_SUBMIT_ARGS that put the JDBC driver on the driver's classpath.

    They must be set before the first Spark session of the process starts its JVM.
    """
    existing = os.environ.get("PYSPARK_SUBMIT_ARGS", "pyspark-shell")
    return f"--driver-class-path {jar} {existing}"
