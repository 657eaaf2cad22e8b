"""Producer throughput: the lab's kafka-python producer against confluent-kafka.

Both send the same pre-serialized messages, keyed by card, to one topic with
the lab's partition count. confluent-kafka wraps librdkafka, a C client, so it
shows what the broker accepts on this machine when the client costs little.
"""

from __future__ import annotations

import cProfile
import dataclasses
import io
import logging
import pstats
import time

import psutil
from confluent_kafka import Producer as ConfluentProducer

from benchmarks.render import Figure, Target, short_paths
from labkit import kafka_broker, producer
from labkit.config import Settings

log = logging.getLogger(__name__)

Message = tuple[str, bytes, bytes]


def bench_settings(settings: Settings) -> Settings:
    """Return settings whose topic is the benchmark's own, beside the lab's topic."""
    return dataclasses.replace(settings, topic=f"{settings.topic}.bench-producer")


def send_with_kafka_python(settings: Settings, messages: list[Message]) -> float:
    """Send messages with the lab's producer settings; return messages per second."""
    client = producer.make_producer(settings)
    try:
        started = time.perf_counter()
        result = producer.send_all(client, settings.topic, messages, total=len(messages))
        seconds = time.perf_counter() - started
    finally:
        producer.close_producer(client)
    if result.delivered != len(messages):
        raise RuntimeError(f"kafka-python delivered {result.delivered} of {len(messages)}")
    return len(messages) / seconds


def confluent_config(settings: Settings) -> dict[str, object]:
    """Translate the lab's kafka-python producer settings to librdkafka's names."""
    lab_client = producer.make_producer(settings)
    lab_config = lab_client.config
    producer.close_producer(lab_client)
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable.idempotence": lab_config["enable_idempotence"],
        "linger.ms": lab_config["linger_ms"],
        "batch.size": lab_config["batch_size"],
        "compression.type": lab_config["compression_type"],
        # murmur2 is what kafka-python uses for keyed messages, so every key
        # lands on the same partition with both clients.
        "partitioner": "murmur2_random",
    }


def send_with_confluent(config: dict[str, object], topic: str, messages: list[Message]) -> float:
    """Send messages with confluent-kafka, wait for every delivery; return messages per second."""
    client = ConfluentProducer(config)
    failures: list[str] = []

    def on_delivery(error, message) -> None:
        if error is not None:
            failures.append(str(error))

    started = time.perf_counter()
    for _, key, value in messages:
        while True:
            try:
                client.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                # The local queue is full: serve delivery reports until it drains.
                client.poll(0.05)
        client.poll(0)
    remaining = client.flush(60)
    seconds = time.perf_counter() - started
    if remaining or failures:
        raise RuntimeError(f"confluent-kafka: {remaining} unsent, {len(failures)} failed")
    return len(messages) / seconds


def profile_kafka_python(settings: Settings, messages: list[Message]) -> str:
    """Profile one kafka-python run: cProfile of the sending thread, CPU time per thread.

    cProfile records only the thread that calls send(); kafka-python's sender
    thread, which compresses batches and talks to the broker, is shown by its CPU time.
    """
    client = producer.make_producer(settings)
    sender_id = client._sender.native_id
    profile = cProfile.Profile()
    cpu_before = _thread_cpu(sender_id)
    started = time.perf_counter()
    profile.enable()
    producer.send_all(client, settings.topic, messages, total=len(messages))
    profile.disable()
    wall = time.perf_counter() - started
    sender_cpu = _thread_cpu(sender_id) - cpu_before
    producer.close_producer(client)

    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(12)
    main_cpu = sum(pstats.Stats(profile).stats[key][2] for key in pstats.Stats(profile).stats)
    header = (
        f"{len(messages):,} messages in {wall:.1f} s wall: {main_cpu:.1f} s in the thread "
        f"that calls send() (cProfile's total), {sender_cpu:.1f} s of CPU in kafka-python's "
        "sender thread. The sending thread's functions by own time:"
    )
    return f"{header}\n\n```\n{short_paths(_trim_stats(out.getvalue()))}\n```"


def _thread_cpu(native_id: int) -> float:
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    return 0.0


def _trim_stats(text: str) -> str:
    # Keep the table of functions; drop pstats' preamble of file names and totals.
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line.rstrip() for line in lines[start:] if line.strip())


def run(settings: Settings, messages: list[Message], runs: int) -> tuple[list[Figure], str]:
    """Alternate kafka-python and confluent-kafka runs; return the figure and a profile if missed."""
    settings = bench_settings(settings)
    kafka_broker.create_topic(settings)
    config = confluent_config(settings)
    lab_rates, confluent_rates = [], []
    try:
        for number in range(1, runs + 1):
            lab_rates.append(send_with_kafka_python(settings, messages))
            confluent_rates.append(send_with_confluent(config, settings.topic, messages))
            log.info(
                "producer run %d: kafka-python %.0f msg/s, confluent-kafka %.0f msg/s",
                number, lab_rates[-1], confluent_rates[-1],
            )
        figure = Figure(
            "kafka-python producer (lab settings)", "msg/s", lab_rates,
            reference="confluent-kafka", reference_samples=confluent_rates,
            target=Target("ratio", ">=", 0.5, "≥ 0.50 of confluent-kafka"),
        )
        profile = "" if figure.met else profile_kafka_python(settings, messages)
    finally:
        kafka_broker.delete_topic(settings)
    return [figure], profile
