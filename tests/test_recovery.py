"""Crashes, outages, restarts and late data: every transaction must end up loaded exactly once.

Each test works on a scratch topic and query of its own and deletes their rows
afterwards, so the loaded lab that other tests count stays as it was. The tests
that stop Kafka or PostgreSQL start them again before they return.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta

import psycopg2
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from labkit import (
    checkpoints,
    kafka_broker,
    postgres,
    producer,
    recovery,
    recovery_checks,
    report,
    streaming,
    warehouse,
)
from labkit.config import Settings
from labkit.processes import LabError

# Offsets per micro-batch in the crash tests, so one run has several batches.
BATCH_SIZE = 200


@pytest.fixture(scope="module")
def dimensions(lab_running: Settings) -> Settings:
    """The generator's dimension rows, so generated transactions infer none."""
    recovery.ensure_dimensions(lab_running)
    return lab_running


@pytest.fixture
def scratch(dimensions: Settings):
    """Settings for a new three-partition topic and query; their rows are deleted afterwards."""
    suffix = uuid.uuid4().hex[:8]
    settings = recovery.scratch_settings(
        dimensions, topic=f"test-recovery-{suffix}", query_name=f"test_recovery_{suffix}"
    )
    kafka_broker.create_topic(settings)
    yield settings
    # A failed test may leave a service stopped; start it so the cleanup can run.
    kafka_broker.start(dimensions)
    postgres.start(dimensions)
    recovery.remove_scratch(settings)


def send(settings: Settings, messages: list[tuple[str, bytes | None, bytes]]) -> int:
    kafka_producer = producer.make_producer(settings)
    try:
        result = producer.send_all(kafka_producer, settings.topic, messages)
    finally:
        kafka_producer.close()
    return result.delivered


def new_transactions(count: int, seed: int, **changes) -> list[tuple[str, bytes, bytes]]:
    return recovery.transaction_messages(
        count, seed, id_prefix=f"{uuid.uuid4().hex[:8]}-", **changes
    )


def loaded_id_counts(settings: Settings) -> Counter:
    """Count each transaction id of the topic in fact_transaction and duplicate_message."""
    frame = warehouse.query(
        settings,
        "select transaction_id from fact_transaction where kafka_topic = %(topic)s "
        "union all select transaction_id from duplicate_message where kafka_topic = %(topic)s",
        {"topic": settings.topic},
    )
    return Counter(frame["transaction_id"])


def fact_count(settings: Settings) -> int:
    try:
        frame = warehouse.query(
            settings, "select count(*) as n from fact_transaction where kafka_topic = %s",
            (settings.topic,),
        )
    except psycopg2.OperationalError:
        return -1
    return int(frame["n"].iloc[0])


def batch_messages_total(settings: Settings) -> int:
    frame = warehouse.query(
        settings, "select coalesce(sum(messages), 0) as n from stream_batch where query_name = %s",
        (settings.query_name,),
    )
    return int(frame["n"].iloc[0])


def topic_ids(settings: Settings) -> list[str]:
    """Return the transaction_id of every message in the topic, read from the beginning."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    partitions = [
        TopicPartition(settings.topic, number)
        for number in consumer.partitions_for_topic(settings.topic)
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ends = consumer.end_offsets(partitions)
    ids = []
    try:
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=2000).values():
                ids.extend(json.loads(record.value)["transaction_id"] for record in records)
    finally:
        consumer.close()
    return ids


# Kill points of the crash test, in order, with the batch each one aims at. The
# 1212 messages make batches 0 to 6 of at most BATCH_SIZE offsets.
#   in_batch: SIGKILL as soon as Spark has planned batch 0 (offsets/0 exists). The
#     first batch of a run takes seconds, so the kill lands before its commit.
#   after_postgres_commit: the sink's test hook kills right after batch 2's
#     PostgreSQL commit, before Spark writes commits/2.
#   after_checkpoint_commit: SIGKILL as soon as Spark has written commits/4.
KILL_POINTS = (("in_batch", 0), ("after_postgres_commit", 2), ("after_checkpoint_commit", 4))


def kill_stream_at(settings: Settings, point: str, batch_id: int) -> dict[str, object]:
    """Run `labkit stream --available-now`, kill it at point, and return what it left behind."""
    folder = recovery.checkpoint_folder(settings)
    hook = batch_id if point == "after_postgres_commit" else None
    stream = recovery.start_labkit(
        settings, "stream", "--available-now", log_name=f"test-kill-{point}",
        LAB_FAULT_KILL_AFTER_BATCH=hook,
    )
    if point == "in_batch":
        recovery.wait_until(
            lambda: (checkpoints.last_planned_batch(folder) or (-1,))[0] >= batch_id,
            120, f"batch {batch_id} is planned", stream,
        )
        code = recovery.kill_process_group(stream)
    elif point == "after_checkpoint_commit":
        recovery.wait_until(
            lambda: (checkpoints.last_committed_batch(folder) or -1) >= batch_id,
            120, f"batch {batch_id} is committed", stream,
        )
        code = recovery.kill_process_group(stream)
    else:
        code = recovery.finish_labkit(settings, stream, timeout=120).returncode
    return {
        "point": point, "batch": batch_id, "code": code,
        **recovery.checkpoint_status(settings),
        "in_postgres": recovery.stream_batch_ids(settings),
    }


def test_sigkill_loses_and_doubles_nothing(scratch):
    settings = dataclasses.replace(scratch, max_offsets_per_trigger=BATCH_SIZE)
    valid = new_transactions(1200, seed=611)
    broken = [(f"broken-{n}", None, b'{"transaction_id": "cut off') for n in range(12)]
    messages = valid[:600] + broken + valid[600:]
    assert send(settings, messages) == len(messages)

    in_batch, after_postgres, after_checkpoint = (
        kill_stream_at(settings, point, batch_id) for point, batch_id in KILL_POINTS
    )
    final = recovery.run_labkit(settings, "stream", "--available-now", log_name="test-kill-final")
    counts = report.stream_counts(settings)
    ids = loaded_id_counts(settings)
    status = recovery.checkpoint_status(settings)
    batches = recovery.stream_batch_ids(settings)
    kills = [in_batch, after_postgres, after_checkpoint]

    assert [kill["code"] for kill in kills] == [-9, -9, -9], kills
    # The in-batch kill left batch 0 planned but not committed.
    assert (in_batch["planned"], in_batch["committed"]) == (0, None), kills
    # The hook killed after PostgreSQL stored batch 2 and before Spark committed it.
    assert 2 in after_postgres["in_postgres"], kills
    assert (after_postgres["planned"], after_postgres["committed"]) == (2, 1), kills
    assert after_checkpoint["committed"] >= 4, kills
    assert final.returncode == 0, final.log[-3000:]
    assert counts["produced"] == len(messages)
    assert counts["loaded"] == len(valid)
    assert counts["quarantined"] == len(broken)
    assert counts["duplicates"] == 0
    assert counts["unaccounted"] == 0
    assert set(ids) == {transaction_id for transaction_id, _, _ in valid}
    assert max(ids.values()) == 1
    assert batch_messages_total(settings) == len(messages)
    assert batches == list(range(7))
    assert status == {"planned": 6, "committed": 6}


def test_broker_restart_delivers_each_once(scratch):
    messages = new_transactions(2000, seed=612)
    kafka_producer = producer.make_producer(scratch)
    outcome: dict[str, producer.ProduceResult] = {}

    def produce() -> None:
        outcome["result"] = producer.send_all(
            kafka_producer, scratch.topic, messages, total=len(messages), rate=250
        )

    sender = threading.Thread(target=produce)
    sender.start()
    time.sleep(2)
    kafka_broker.stop(scratch)
    stopped_at = time.monotonic()
    time.sleep(5)
    kafka_broker.start(scratch)
    outage = time.monotonic() - stopped_at
    sender.join(timeout=180)
    kafka_producer.close()
    ids = Counter(topic_ids(scratch))
    result = outcome["result"]

    assert outage >= 5
    assert result.failed == []
    assert result.delivered == len(messages)
    assert sum(ids.values()) == len(messages)
    assert set(ids) == {transaction_id for transaction_id, _, _ in messages}
    assert max(ids.values()) == 1


def test_delivery_timeout_lists_failed_ids(scratch):
    count = 400
    runs = []
    producing = threading.Thread(target=lambda: runs.append(recovery.run_labkit(
        scratch, "produce", "--count", str(count), "--rate", "100", "--seed", "7",
        log_name="test-delivery-timeout", timeout=120, LAB_DELIVERY_TIMEOUT_MS=3000,
    )))
    producing.start()
    recovery.wait_until(lambda: report.topic_message_count(scratch) > 0, 60,
                        "the first message is in the topic")
    kafka_broker.stop(scratch)
    producing.join(timeout=120)
    kafka_broker.start(scratch)
    run = runs[0]
    summary = json.loads(run.stdout)
    named = {line.strip() for line in run.log.splitlines() if is_uuid(line.strip())}
    in_topic = set(topic_ids(scratch))
    sent_ids = {
        transaction_id
        for transaction_id, _, _ in recovery.transaction_messages(count, seed=7)
    }

    assert run.returncode == 1
    assert summary["failed"] > 0
    assert summary["delivered"] + summary["failed"] == count
    assert len(named) == summary["failed"]
    assert named <= sent_ids
    assert sent_ids - named <= in_topic


def test_postgres_outage_retries_fails_recovers(scratch):
    settings = dataclasses.replace(scratch, sink_retries=4)
    first, second, third = (new_transactions(200, seed) for seed in (613, 614, 615))
    stream = recovery.start_labkit(settings, "stream", log_name="test-postgres-outage")
    try:
        assert send(settings, first) == 200
        recovery.wait_until(lambda: fact_count(settings) == 200, 120, "200 rows are loaded",
                            stream)

        # A short outage: the sink retries and the running query goes on.
        postgres.stop(settings)
        assert send(settings, second) == 200
        log_file = recovery.log_path(settings, "test-postgres-outage")
        recovery.wait_until(lambda: "attempt 1 of 5" in log_file.read_text(), 60,
                            "the sink logs a failed attempt", stream)
        postgres.start(settings)
        recovery.wait_until(lambda: fact_count(settings) == 400, 60, "400 rows are loaded",
                            stream)

        # A long outage: the retries run out and the query stops with an error.
        postgres.stop(settings)
        assert send(settings, third) == 200
        failed = recovery.finish_labkit(settings, stream, timeout=120)
    finally:
        if stream.process.poll() is None:
            recovery.kill_process_group(stream)
        postgres.start(settings)
    restarted = recovery.run_labkit(settings, "stream", "--available-now",
                                    log_name="test-postgres-restart")
    counts = report.stream_counts(settings)
    ids = loaded_id_counts(settings)

    assert failed.returncode == 2
    assert "retrying in" in failed.log
    assert "could not be loaded into PostgreSQL" in failed.log
    assert "run 'labkit stream' again" in failed.log
    assert restarted.returncode == 0, restarted.log[-3000:]
    assert counts["loaded"] == 600
    assert counts["duplicates"] == 0
    assert counts["unaccounted"] == 0
    assert set(ids) == {transaction_id for transaction_id, _, _ in first + second + third}
    assert max(ids.values()) == 1


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def run_query(spark, settings: Settings):
    query = streaming.start(spark, settings, available_now=True)
    query.awaitTermination()
    return query


def test_recreated_topic_is_rejected(spark, scratch):
    assert send(scratch, new_transactions(30, seed=616)) == 30
    assert run_query(spark, scratch).exception() is None
    kafka_broker.delete_topic(scratch)
    kafka_broker.create_topic(scratch)
    # As many messages as before or more: Spark alone would skip the first 30.
    assert send(scratch, new_transactions(60, seed=617)) == 60

    with pytest.raises(LabError) as rejected:
        streaming.start(spark, scratch, available_now=True)

    assert "deleted and created again" in str(rejected.value)
    assert "labkit lab reset" in str(rejected.value)
    assert fact_count(scratch) == 30


def test_recreated_empty_topic_rejected_by_offsets(spark, scratch):
    assert send(scratch, new_transactions(30, seed=618)) == 30
    assert run_query(spark, scratch).exception() is None
    kafka_broker.delete_topic(scratch)
    kafka_broker.create_topic(scratch)
    # Without the stored topic id, as in a checkpoint older than the check, the offsets tell.
    (recovery.checkpoint_folder(scratch) / checkpoints.TOPIC_FILE).unlink()

    with pytest.raises(LabError) as rejected:
        streaming.start(spark, scratch, available_now=True)

    assert "but the topic ends at offset 0" in str(rejected.value)
    assert "labkit lab reset" in str(rejected.value)


def test_deleted_offsets_are_rejected(spark, scratch):
    assert send(scratch, new_transactions(30, seed=619)) == 30
    assert run_query(spark, scratch).exception() is None
    assert send(scratch, new_transactions(30, seed=620)) == 30
    ends = checkpoints.describe_topic(scratch).end
    admin = KafkaAdminClient(bootstrap_servers=scratch.kafka_bootstrap)
    try:
        admin.delete_records(
            {TopicPartition(scratch.topic, number): end for number, end in ends.items()}
        )
    finally:
        admin.close()

    with pytest.raises(LabError) as rejected:
        streaming.start(spark, scratch, available_now=True)

    assert "were deleted before the stream read them" in str(rejected.value)


def test_other_topics_checkpoint_is_rejected(spark, scratch):
    assert send(scratch, new_transactions(10, seed=621)) == 10
    assert run_query(spark, scratch).exception() is None
    other = dataclasses.replace(scratch, topic=f"{scratch.topic}-other")
    kafka_broker.create_topic(other)
    try:
        with pytest.raises(LabError) as rejected:
            streaming.start(spark, other, available_now=True)
    finally:
        kafka_broker.delete_topic(other)

    assert f"it reads topic {scratch.topic}" in str(rejected.value)


def test_stream_command_rejects_recreated_topic(spark, scratch):
    assert send(scratch, new_transactions(10, seed=622)) == 10
    assert run_query(spark, scratch).exception() is None
    kafka_broker.delete_topic(scratch)
    kafka_broker.create_topic(scratch)
    assert send(scratch, new_transactions(10, seed=623)) == 10

    rejected = recovery.run_labkit(scratch, "stream", "--available-now",
                                  log_name="test-stream-rejected", timeout=120)

    assert rejected.returncode == 2
    assert "deleted and created again" in rejected.log
    assert "labkit lab reset" in rejected.log


def test_late_events_are_loaded(spark, scratch):
    on_time = new_transactions(100, seed=624)
    # The generator spreads events over 7 days; 12 days back puts every late one
    # at least 5 days before the oldest on-time one.
    late = new_transactions(10, seed=625, event_time_shift=-timedelta(days=12))
    assert send(scratch, on_time) == 100
    first = run_query(spark, scratch)
    assert send(scratch, late) == 10
    second = run_query(spark, scratch)
    frame = warehouse.query(
        scratch,
        "select transaction_id, event_time from fact_transaction where kafka_topic = %s",
        (scratch.topic,),
    )
    event_times = dict(zip(frame["transaction_id"], frame["event_time"], strict=True))
    late_ids = {transaction_id for transaction_id, _, _ in late}
    newest_late = max(event_times[transaction_id] for transaction_id in late_ids)
    oldest_on_time = min(
        event_times[transaction_id] for transaction_id, _, _ in on_time
    )
    sent_late = {
        transaction_id: json.loads(value)["event_time"] for transaction_id, _, value in late
    }

    assert first.exception() is None
    assert second.exception() is None
    assert len(event_times) == 110
    assert late_ids <= set(event_times)
    assert oldest_on_time - newest_late > timedelta(days=3)
    for transaction_id, sent in sent_late.items():
        assert event_times[transaction_id] == datetime.fromisoformat(sent)
    # The card state's watermark had passed them: they are loaded all the same,
    # marked late for the card rules, and the batch counts them.
    late_rows = warehouse.query(
        scratch,
        "select count(*) filter (where late_for_card_rules) as marked,"
        " (select coalesce(sum(late), 0) from stream_batch where query_name = %s) as counted"
        " from fact_transaction where kafka_topic = %s and transaction_id = any(%s)",
        (scratch.query_name, scratch.topic, sorted(late_ids)),
    ).iloc[0]
    assert int(late_rows["marked"]) == 10
    assert int(late_rows["counted"]) == 10


def test_exactly_once_check_passes_and_fails(spark, scratch):
    messages = new_transactions(20, seed=626)
    ids = [transaction_id for transaction_id, _, _ in messages]
    assert send(scratch, messages) == 20
    assert run_query(spark, scratch).exception() is None

    recovery_checks.check_exactly_once(scratch, ids)
    with pytest.raises(AssertionError, match="1 of 21 transactions are not in fact_transaction"):
        recovery_checks.check_exactly_once(scratch, [*ids, "never-sent"])
    with psycopg2.connect(**scratch.pg_connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(
            "insert into duplicate_message (kafka_topic, kafka_partition, kafka_offset, "
            "transaction_id) values (%s, 0, 999999, %s)",
            (scratch.topic, ids[0]),
        )
    conn.close()
    doubled = "1 of 20 transactions were also counted in duplicate_message"
    with pytest.raises(AssertionError, match=doubled):
        recovery_checks.check_exactly_once(scratch, ids)
