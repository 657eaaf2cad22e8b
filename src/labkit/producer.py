"""Send transactions to Kafka with kafka-python, confirming the delivery of every message."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from tqdm.auto import tqdm

from labkit import generator, warehouse
from labkit.config import Settings
from labkit.processes import LabError

log = logging.getLogger(__name__)

LINGER_MS = 20
# The smallest LAB_DELIVERY_TIMEOUT_MS: a request needs time to reach the broker and return.
MIN_DELIVERY_TIMEOUT_MS = 1000
# Failed deliveries logged one by one; the rest are only counted.
MAX_FAILURES_LOGGED = 10
# Seconds that send_all waits for acknowledgements beyond the delivery timeout.
FLUSH_MARGIN_SECONDS = 5.0


@dataclass
class ProduceResult:
    """Messages sent, acknowledged by the broker, and the ids of those that failed.

    A failed message was not confirmed. It can still be in the topic when the
    broker wrote it but its acknowledgement was lost.
    """

    sent: int = 0
    delivered: int = 0
    failed: list[str] = field(default_factory=list)
    fraud_labels: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "failed": len(self.failed),
            "failed_ids": self.failed[:20],
            "fraud_labels": self.fraud_labels,
            "seconds": round(self.seconds, 2),
        }


def make_producer(settings: Settings, **overrides: object) -> KafkaProducer:
    """Return a producer that waits for all in-sync replicas and never writes a message twice.

    Raises LabError when no broker responds at settings.kafka_bootstrap.
    """
    delivery_timeout_ms = settings.delivery_timeout_ms
    if delivery_timeout_ms < MIN_DELIVERY_TIMEOUT_MS:
        raise ValueError(
            f"LAB_DELIVERY_TIMEOUT_MS must be at least {MIN_DELIVERY_TIMEOUT_MS} ms, "
            f"got {delivery_timeout_ms}"
        )
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "retries": 2**31 - 1,
        # Give up on a message after this many milliseconds of retries, for
        # example while the broker restarts, and report it as failed.
        "delivery_timeout_ms": delivery_timeout_ms,
        # kafka-python rejects a delivery timeout below linger_ms + request_timeout_ms.
        "request_timeout_ms": min(30_000, delivery_timeout_ms - LINGER_MS),
        "linger_ms": LINGER_MS,
        "batch_size": 64 * 1024,
        "compression_type": "gzip",
        "client_id": "labkit-producer",
        # kafka-python waits up to 30 s between reconnect attempts by default; a short
        # cap resumes sending within seconds of a broker restart on the lab's loopback.
        "reconnect_backoff_max_ms": 2000,
        "max_block_ms": 10_000,
    }
    options.update(overrides)
    try:
        return KafkaProducer(**options)
    except KafkaError as error:
        raise LabError(
            f"could not reach Kafka at {settings.kafka_bootstrap} ({error}); "
            "check that the lab is up with 'labkit lab status'"
        ) from error


def send_all(
    producer: KafkaProducer,
    topic: str,
    messages: Iterable[tuple[str, bytes | None, bytes]],
    total: int | None = None,
    rate: float | None = None,
) -> ProduceResult:
    """Send (id, key, value) triples, wait for every acknowledgement, and count the outcome.

    rate, when given, paces sending to that many messages per second.
    """
    result = ProduceResult()
    futures = []
    started = time.monotonic()
    pending = iter(messages)
    with tqdm(total=total, unit="msg", desc="produce", mininterval=1.0) as progress:
        for message_id, key, value in pending:
            if rate:
                ahead = started + result.sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            try:
                futures.append((message_id, producer.send(topic, key=key, value=value)))
            except KafkaError as error:
                # send() blocks for max_block_ms when the broker is unreachable;
                # failing the rest at once beats waiting that long per message.
                log.error("send failed for %s: %s; not sending the rest", message_id, error)
                result.failed.append(message_id)
                result.failed.extend(rest_id for rest_id, _, _ in pending)
                break
            result.sent += 1
            progress.update(1)

    _flush_or_abandon(producer)
    undelivered = 0
    for message_id, future in futures:
        try:
            future.get(timeout=0)
            result.delivered += 1
        except KafkaError as error:
            undelivered += 1
            if undelivered <= MAX_FAILURES_LOGGED:
                log.error("delivery failed for %s: %s", message_id, error)
            result.failed.append(message_id)
    if undelivered > MAX_FAILURES_LOGGED:
        log.error(
            "delivery failed for %d more messages; ProduceResult.failed lists every id",
            undelivered - MAX_FAILURES_LOGGED,
        )
    result.seconds = time.monotonic() - started
    log.info(
        "sent %d messages to %s: %d delivered, %d failed, in %.1f s",
        result.sent, topic, result.delivered, len(result.failed), result.seconds,
    )
    return result


def _flush_or_abandon(producer: KafkaProducer) -> None:
    # NOTE: kafka-python 3.0.12 stops expiring batches while an idempotent producer
    # waits for a new producer id from an unreachable broker, so flush() without a
    # timeout can wait forever once the broker is gone for good.
    timeout = producer.config["delivery_timeout_ms"] / 1000 + FLUSH_MARGIN_SECONDS
    try:
        producer.flush(timeout=timeout)
    except KafkaTimeoutError:
        log.error(
            "delivery not confirmed within %.0f s; closing the producer and counting every "
            "unconfirmed message as failed", timeout,
        )
        # Dropping the unsent batches keeps a reported failure from arriving later.
        close_producer(producer, timeout=0)


def close_producer(producer: KafkaProducer, timeout: float = 10.0) -> None:
    """Close the producer, waiting up to timeout seconds; then drop the messages still unsent.

    A dropped message's future fails, so send_all counts it as failed.
    """
    try:
        producer.close(timeout=timeout)
    except KafkaTimeoutError:
        # kafka-python 3.0.12's close() raises from its own flush before it would
        # force the close, so the sender thread is stopped directly.
        log.warning("producer still had unsent messages after %.0f s; dropping them", timeout)
        producer._sender.force_close()
        producer._sender.join(timeout=5)


def produce_generated(
    settings: Settings,
    count: int,
    rate: float | None = None,
    seed: int = 1,
    config: generator.GeneratorConfig | None = None,
) -> ProduceResult:
    """Generate count transactions of the world in config and produce them with their labels."""
    if count < 0:
        raise ValueError(f"count must be zero or more, got {count}")
    config = config or generator.GeneratorConfig()
    world = generator.build_world(config)
    transactions = list(generator.generate_transactions(world, config, count, seed))
    labels = [(t.transaction_id, t.fraud_scenario) for t in transactions if t.fraud_scenario]

    dimensions = {
        "dim_customer": world.rows("customers"),
        "dim_card": world.rows("cards"),
        "dim_merchant": world.rows("merchants"),
    }
    return produce_transactions(settings, dimensions, labels, transactions, count, rate)


def produce_transactions(
    settings: Settings,
    dimensions: dict[str, list[dict[str, object]]],
    labels: list[tuple[str, str]],
    transactions: Iterable[generator.Transaction],
    total: int,
    rate: float | None = None,
) -> ProduceResult:
    """Upsert dimension rows by table and store fraud labels, then send the transactions.

    The labels go to Postgres before any message is sent, so the ground truth
    is complete for every transaction the stream can see. Each message is keyed
    by card_id, so one card's transactions stay in order within a partition.
    """
    with warehouse.connect(settings) as conn:
        for table, rows in dimensions.items():
            warehouse.upsert_dimension(conn, table, rows)
        warehouse.insert_labels(conn, labels)
    conn.close()

    messages = (
        (t.transaction_id, t.card_id.encode(), json.dumps(t.to_message()).encode())
        for t in transactions
    )
    producer = make_producer(settings)
    try:
        result = send_all(producer, settings.topic, messages, total=total, rate=rate)
    finally:
        close_producer(producer)
    result.fraud_labels = len(labels)
    return result


def read_raw_lines(path: Path) -> list[bytes]:
    """Split a file into message values at each newline byte, keeping every other byte.

    A final newline ends the last line rather than starting an empty one.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def produce_raw_file(settings: Settings, path: Path) -> ProduceResult:
    """Send each line of path, byte for byte, as one unkeyed message value."""
    lines = read_raw_lines(path)
    messages = ((f"{path.name}:{number}", None, line) for number, line in enumerate(lines, 1))
    producer = make_producer(settings)
    try:
        return send_all(producer, settings.topic, messages, total=len(lines))
    finally:
        close_producer(producer)
