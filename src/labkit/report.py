"""Counts that show whether the lab's pipeline is complete: Kafka, the warehouse and dbt's marts."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, TopicPartition

from labkit import warehouse
from labkit.config import Settings

# The schema dbt builds its marts in.
MARTS_SCHEMA = "marts"


def topic_message_count(settings: Settings) -> int:
    """Return the messages the topic holds: the sum over partitions of end minus start offset."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    try:
        partitions = consumer.partitions_for_topic(settings.topic) or set()
        assigned = [TopicPartition(settings.topic, number) for number in partitions]
        if not assigned:
            return 0
        starts = consumer.beginning_offsets(assigned)
        ends = consumer.end_offsets(assigned)
        return sum(ends[partition] - starts[partition] for partition in assigned)
    finally:
        consumer.close()


# Counts of what the stream made of the lab's topic; other topics' rows are left out.
_WAREHOUSE_COUNTS = """
select
    (select count(*) from fact_transaction where kafka_topic = %(topic)s) as loaded,
    (select count(*) from quarantine where kafka_topic = %(topic)s) as quarantined,
    (select count(*) from duplicate_message where kafka_topic = %(topic)s) as duplicates,
    (select count(*) from fact_transaction
     where kafka_topic = %(topic)s and is_flagged) as flagged,
    (select count(*) from fraud_label) as fraud_labels
"""


def mart_row_counts(settings: Settings) -> dict[str, int]:
    """Return the row count of every table in the marts schema, by table name."""
    tables = warehouse.query(
        settings,
        "select table_name from information_schema.tables "
        "where table_schema = %s and table_type = 'BASE TABLE' order by table_name",
        (MARTS_SCHEMA,),
    )
    counts = {}
    for table in tables["table_name"]:
        frame = warehouse.query(settings, f'select count(*) as n from {MARTS_SCHEMA}."{table}"')
        counts[table] = int(frame["n"].iloc[0])
    return counts


def collect(settings: Settings) -> dict[str, Any]:
    """Return produced, loaded, quarantined, duplicates, flagged, fraud_labels and mart counts.

    When the stream has caught up, produced = loaded + quarantined + duplicates;
    `unaccounted` is the difference, which must then be zero.
    """
    produced = topic_message_count(settings)
    counts = warehouse.query(settings, _WAREHOUSE_COUNTS, {"topic": settings.topic}).iloc[0]
    loaded, quarantined, duplicates = (
        int(counts["loaded"]), int(counts["quarantined"]), int(counts["duplicates"])
    )
    quarantine_reasons = warehouse.query(
        settings,
        "select reason, count(*) as n from quarantine where kafka_topic = %s "
        "group by reason order by reason",
        (settings.topic,),
    )
    return {
        "produced": produced,
        "loaded": loaded,
        "quarantined": quarantined,
        "duplicates": duplicates,
        "unaccounted": produced - loaded - quarantined - duplicates,
        "flagged": int(counts["flagged"]),
        "fraud_labels": int(counts["fraud_labels"]),
        "quarantined_by_reason": dict(
            zip(quarantine_reasons["reason"], map(int, quarantine_reasons["n"]), strict=True)
        ),
        "marts": mart_row_counts(settings),
    }


def stream_counts(settings: Settings) -> dict[str, int]:
    """Return produced, loaded, quarantined, duplicates and unaccounted for settings.topic.

    The same numbers as collect() without the marts and labels, cheap enough to
    show after every step of a recovery exercise.
    """
    produced = topic_message_count(settings)
    counts = warehouse.query(settings, _WAREHOUSE_COUNTS, {"topic": settings.topic}).iloc[0]
    loaded, quarantined, duplicates = (
        int(counts["loaded"]), int(counts["quarantined"]), int(counts["duplicates"])
    )
    return {
        "produced": produced,
        "loaded": loaded,
        "quarantined": quarantined,
        "duplicates": duplicates,
        "unaccounted": produced - loaded - quarantined - duplicates,
    }
