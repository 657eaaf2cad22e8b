"""Writes to the Postgres star schema: dimensions, fraud labels and streamed micro-batches.

Every write is idempotent. Loading the same dimension rows or the same
micro-batch twice leaves the tables as one load would.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor
from psycopg2.extras import execute_values

from labkit.config import Settings

log = logging.getLogger(__name__)

DIMENSION_COLUMNS = {
    "dim_customer": ("customer_id", "full_name", "email", "city", "country_code",
                     "latitude", "longitude", "signup_date"),
    "dim_card": ("card_id", "customer_id", "card_brand", "masked_pan", "issued_on"),
    "dim_merchant": ("merchant_id", "merchant_name", "mcc", "city", "country_code",
                     "latitude", "longitude"),
}

# Columns of a valid streamed transaction, in the order load_batch expects them.
FACT_COLUMNS = (
    "transaction_id", "event_time", "customer_id", "card_id", "merchant_id", "amount",
    "currency", "channel", "mcc", "fraud_score", "is_flagged", "fraud_rules",
    "card_payments_10m", "card_prior_payments", "card_mean_amount", "travel_km", "travel_kmh",
    "terminal_confirmed_frauds", "late_for_card_rules",
    "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
)
# Arrow types of FACT_COLUMNS, for fact_table. Times are ISO-8601 text in UTC,
# as the stream sends them, so no Python time zone can shift them.
FACT_ARROW_SCHEMA = pa.schema([
    ("transaction_id", pa.string()), ("event_time", pa.string()),
    ("customer_id", pa.string()), ("card_id", pa.string()), ("merchant_id", pa.string()),
    ("amount", pa.decimal128(12, 2)), ("currency", pa.string()), ("channel", pa.string()),
    ("mcc", pa.string()), ("fraud_score", pa.decimal128(4, 3)), ("is_flagged", pa.bool_()),
    ("fraud_rules", pa.list_(pa.string())), ("card_payments_10m", pa.int32()),
    ("card_prior_payments", pa.int32()), ("card_mean_amount", pa.decimal128(12, 2)),
    ("travel_km", pa.decimal128(9, 1)), ("travel_kmh", pa.decimal128(10, 1)),
    ("terminal_confirmed_frauds", pa.int32()), ("late_for_card_rules", pa.bool_()),
    ("kafka_topic", pa.string()), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
    ("kafka_timestamp", pa.string()),
])
# Columns of a rejected message, in the order load_batch expects them.
QUARANTINE_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset", "raw_value", "reason")


def connect(settings: Settings) -> Connection:
    return psycopg2.connect(**settings.pg_connect_kwargs())


def query(
    settings: Settings, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
) -> pd.DataFrame:
    """Run a read-only SQL query and return its rows as a DataFrame."""
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        columns = [column.name for column in cur.description]
        frame = pd.DataFrame(cur.fetchall(), columns=columns)
    conn.close()
    return frame


def upsert_dimension(conn: Connection, table: str, rows: Iterable[dict[str, Any]]) -> int:
    """Insert or update dimension rows by primary key; an inferred row becomes a full one."""
    columns = DIMENSION_COLUMNS[table]
    key, *attributes = columns
    updates = ", ".join(f"{name} = excluded.{name}" for name in attributes)
    statement = (
        f"insert into {table} ({', '.join(columns)}) values %s "
        f"on conflict ({key}) do update set {updates}, is_inferred = false, updated_at = now()"
    )
    values = [tuple(row[name] for name in columns) for row in rows]
    with conn.cursor() as cur:
        execute_values(cur, statement, values, page_size=1000)
    return len(values)


def insert_labels(conn: Connection, labels: Iterable[tuple[str, str]]) -> int:
    """Store (transaction_id, scenario) pairs of the generator's fraud."""
    values = list(labels)
    with conn.cursor() as cur:
        execute_values(
            cur,
            "insert into fraud_label (transaction_id, scenario) values %s "
            "on conflict (transaction_id) do update set scenario = excluded.scenario",
            values,
            page_size=1000,
        )
    return len(values)


@dataclass(frozen=True)
class BatchCounts:
    """Outcome counts of one micro-batch; loaded, duplicates and quarantined add up to messages."""

    messages: int
    loaded: int
    duplicates: int
    quarantined: int
    flagged: int
    # Loaded without card features because they arrived behind the watermark.
    late: int


_STAGE_TABLE = """
create temporary table if not exists stage_transaction (
    transaction_id text, event_time timestamptz, customer_id text, card_id text,
    merchant_id text, amount numeric(12, 2), currency char(3), channel text,
    mcc char(4), fraud_score numeric(4, 3), is_flagged boolean, fraud_rules text[],
    card_payments_10m integer, card_prior_payments integer, card_mean_amount numeric(12, 2),
    travel_km numeric(9, 1), travel_kmh numeric(10, 1), terminal_confirmed_frauds integer,
    late_for_card_rules boolean,
    kafka_topic text, kafka_partition integer, kafka_offset bigint,
    kafka_timestamp timestamptz
) on commit delete rows
"""

# A transaction may arrive before its customer, card or merchant: the stream
# then adds an inferred dimension row (ids only) that the generator fills later,
# so the fact is kept and its foreign keys hold.
_INFER_DIMENSIONS = """
insert into dim_customer (customer_id, is_inferred)
select distinct customer_id, true from stage_transaction
on conflict (customer_id) do nothing;

insert into dim_card (card_id, customer_id, is_inferred)
select distinct on (card_id) card_id, customer_id, true from stage_transaction
order by card_id
on conflict (card_id) do nothing;

insert into dim_merchant (merchant_id, mcc, is_inferred)
select distinct on (merchant_id) merchant_id, mcc, true from stage_transaction
order by merchant_id
on conflict (merchant_id) do nothing;
"""

# The first offset of a transaction_id wins; replaying a batch inserts nothing new.
_INSERT_FACTS = f"""
insert into fact_transaction ({", ".join(FACT_COLUMNS)})
select distinct on (transaction_id) {", ".join(FACT_COLUMNS)}
from stage_transaction
order by transaction_id, kafka_partition, kafka_offset
on conflict (transaction_id) do nothing
"""

# A valid message whose transaction_id was loaded from another offset is a duplicate.
_RECORD_DUPLICATES = """
insert into duplicate_message (kafka_topic, kafka_partition, kafka_offset, transaction_id)
select s.kafka_topic, s.kafka_partition, s.kafka_offset, s.transaction_id
from stage_transaction as s
join fact_transaction as f using (transaction_id)
where (f.kafka_topic, f.kafka_partition, f.kafka_offset)
    is distinct from (s.kafka_topic, s.kafka_partition, s.kafka_offset)
on conflict do nothing
"""

# Counted from the tables rather than from rowcounts, so a replayed batch
# reports the same numbers as its first run.
_COUNT_OUTCOMES = """
select
    count(f.transaction_id),
    count(d.transaction_id),
    count(*) filter (where f.is_flagged),
    count(*) filter (where f.late_for_card_rules)
from stage_transaction as s
left join fact_transaction as f
    on f.transaction_id = s.transaction_id
    and f.kafka_topic = s.kafka_topic
    and f.kafka_partition = s.kafka_partition
    and f.kafka_offset = s.kafka_offset
left join duplicate_message as d
    on d.kafka_topic = s.kafka_topic
    and d.kafka_partition = s.kafka_partition
    and d.kafka_offset = s.kafka_offset
"""


def fact_table(rows: Sequence[tuple[Any, ...]]) -> pa.Table:
    """Return tuples in FACT_COLUMNS order as an Arrow table of FACT_ARROW_SCHEMA."""
    records = [dict(zip(FACT_COLUMNS, row, strict=True)) for row in rows]
    return pa.Table.from_pylist(records, schema=FACT_ARROW_SCHEMA)


def fact_csv(valid: pa.Table) -> io.BytesIO:
    """Return valid's FACT_COLUMNS as CSV for COPY, with fraud_rules as an array literal."""
    rules = valid["fraud_rules"]
    literal = pc.binary_join_element_wise("{", pc.binary_join(rules, ","), "}", "")
    columns = [literal if name == "fraud_rules" else valid[name] for name in FACT_COLUMNS]
    buffer = io.BytesIO()
    # Every value is quoted and a null is left empty, so COPY's CSV format can
    # distinguish an empty text from a null.
    options = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
    pa_csv.write_csv(pa.Table.from_arrays(columns, names=list(FACT_COLUMNS)), buffer, options)
    buffer.seek(0)
    return buffer


def stage_facts(cur: Cursor, valid: pa.Table) -> None:
    """Copy valid into the temporary table stage_transaction and add the dimensions it lacks."""
    cur.execute(_STAGE_TABLE)
    cur.copy_expert(
        f"copy stage_transaction ({', '.join(FACT_COLUMNS)}) from stdin (format csv)",
        fact_csv(valid),
    )
    cur.execute(_INFER_DIMENSIONS)


def load_batch(
    conn: Connection,
    query_name: str,
    batch_id: int,
    valid: pa.Table | Sequence[tuple[Any, ...]],
    rejected: Sequence[tuple[Any, ...]],
    started_at: str,
) -> BatchCounts:
    """Load one micro-batch in a single transaction: facts, duplicates, quarantine, batch row.

    valid is an Arrow table with FACT_COLUMNS (the stream's) or tuples in
    FACT_COLUMNS order; rejected contains tuples in QUARANTINE_COLUMNS order.
    The valid rows reach PostgreSQL through COPY.
    """
    if not isinstance(valid, pa.Table):
        valid = fact_table(valid)
    with conn, conn.cursor() as cur:
        loaded = duplicates = flagged = late = 0
        if valid.num_rows:
            stage_facts(cur, valid)
            cur.execute(_INSERT_FACTS)
            cur.execute(_RECORD_DUPLICATES)
            cur.execute(_COUNT_OUTCOMES)
            loaded, duplicates, flagged, late = cur.fetchone()

        if rejected:
            execute_values(
                cur,
                f"insert into quarantine ({', '.join(QUARANTINE_COLUMNS)}) values %s "
                "on conflict do nothing",
                rejected,
                page_size=2000,
            )

        counts = BatchCounts(
            messages=valid.num_rows + len(rejected),
            loaded=loaded,
            duplicates=duplicates,
            quarantined=len(rejected),
            flagged=flagged,
            late=late,
        )
        cur.execute(
            """
            insert into stream_batch (query_name, batch_id, messages, loaded, duplicates,
                                      quarantined, flagged, late, started_at, finished_at)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())
            on conflict (query_name, batch_id) do update set
                messages = excluded.messages, loaded = excluded.loaded,
                duplicates = excluded.duplicates, quarantined = excluded.quarantined,
                flagged = excluded.flagged, late = excluded.late,
                started_at = excluded.started_at,
                finished_at = excluded.finished_at
            """,
            (query_name, batch_id, counts.messages, counts.loaded, counts.duplicates,
             counts.quarantined, counts.flagged, counts.late, started_at),
        )
    return counts


def merchant_locations(conn: Connection) -> list[tuple[str, Any, Any]]:
    """Return (merchant_id, latitude, longitude) of every merchant with a known location."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "select merchant_id, latitude, longitude from dim_merchant "
            "where latitude is not null and longitude is not null"
        )
        return cur.fetchall()


def confirmed_frauds(
    conn: Connection, batch: Sequence[tuple[str, str, Any]], after: Any, until: Any
) -> list[tuple[str, Any]]:
    """Return (merchant_id, fraud_time) of the labelled frauds from after (excluded) to until.

    batch contains (transaction_id, merchant_id, event_time) of the micro-batch being
    scored: its frauds are not loaded yet, but the older ones count for its newer
    payments. Frauds already loaded come from fact_transaction.
    """
    with conn, conn.cursor() as cur:
        cur.execute(
            "select f.transaction_id, f.merchant_id, f.event_time from fact_transaction as f "
            "join fraud_label as l using (transaction_id) "
            "where f.event_time > %s and f.event_time <= %s",
            (after, until),
        )
        frauds = {row[0]: row[1:] for row in cur.fetchall()}
        cur.execute(
            "select transaction_id from fraud_label where transaction_id = any(%s)",
            ([transaction_id for transaction_id, _, _ in batch],),
        )
        labelled = {row[0] for row in cur.fetchall()}
    # A replayed batch's frauds may be loaded already: the dict counts each one once.
    for transaction_id, merchant_id, event_time in batch:
        if transaction_id in labelled and after < event_time <= until:
            frauds[transaction_id] = (merchant_id, event_time)
    return list(frauds.values())
