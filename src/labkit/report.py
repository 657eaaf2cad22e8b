"""Counts that show whether the lab's pipeline is complete: Kafka, the warehouse and dbt's marts."""

from __future__ import annotations

from typing import Any

import pandas as pd
from kafka import KafkaConsumer, TopicPartition

from labkit import metrics, warehouse
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
    (select count(*) from fact_transaction
     where kafka_topic = %(topic)s and late_for_card_rules) as late,
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
    """Return stream_counts(), fraud_labels, the marts' row counts and the detection quality.

    When the stream has caught up, produced = loaded + quarantined + duplicates;
    `unaccounted` is the difference, which must then be zero. precision, recall,
    average_precision and cp_at_100 score the streaming rules against the fraud
    labels (see detection_quality); they are null without labelled fraud.
    """
    counts = stream_counts(settings)
    quarantine_reasons = warehouse.query(
        settings,
        "select reason, count(*) as n from quarantine where kafka_topic = %s "
        "group by reason order by reason",
        (settings.topic,),
    )
    return {
        **counts,
        "quarantined_by_reason": dict(
            zip(quarantine_reasons["reason"], map(int, quarantine_reasons["n"]), strict=True)
        ),
        **detection_quality(settings),
        "marts": mart_row_counts(settings),
    }


def stream_counts(settings: Settings) -> dict[str, int]:
    """Return produced, loaded, quarantined, duplicates, unaccounted, flagged, late, fraud_labels.

    Counts are for settings.topic, cheap enough to show after every step of a
    recovery exercise. late counts the loaded transactions that arrived behind
    the watermark and so skipped the card rules.
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
        "flagged": int(counts["flagged"]),
        "late": int(counts["late"]),
        "fraud_labels": int(counts["fraud_labels"]),
    }


def detection_quality(settings: Settings, k: int = 100) -> dict[str, float | None]:
    """Return precision, recall, average_precision and cp_at_100 of the topic's transactions.

    cp_at_100 is the mean card precision at k over every day of the data
    (labkit.metrics.card_precision_at_k). Each figure is None when it is
    undefined, such as recall without any labelled fraud.
    """
    scored = warehouse.query(
        settings, metrics.SCORED_TRANSACTIONS_SQL + " where f.kafka_topic = %s", (settings.topic,)
    )
    names = ("precision", "recall", "average_precision", f"cp_at_{k}")
    if scored.empty:
        return dict.fromkeys(names)
    scored["event_time"] = pd.to_datetime(scored["event_time"], utc=True)
    scored["is_fraud"] = scored["is_fraud"].astype(bool)
    overall = metrics.quality(scored)
    days = scored["event_time"].dt.date
    card_precision = metrics.card_precision_at_k(scored, k, days.min(), days.max())
    figures = (overall["precision"], overall["recall"], overall["average_precision"],
               card_precision.mean if overall["frauds"] else float("nan"))
    return {name: None if pd.isna(value) else round(float(value), 4)
            for name, value in zip(names, figures, strict=True)}
