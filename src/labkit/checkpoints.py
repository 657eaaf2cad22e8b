"""Check, before a streaming query starts, that its checkpoint still matches its Kafka topic.

A checkpoint stores Kafka offsets, and offsets mean something only in the topic
that produced them. With failOnDataLoss=true, Spark's Kafka source (PySpark 4.2.0)
fails a query whose checkpoint names a partition the topic no longer has, or an
offset beyond the partition's end. But when the topic is deleted and recreated
and then receives as many messages as before or more, Spark goes on from the old
offsets and silently skips the new topic's first messages.

So labkit stores the topic id beside the checkpoint (Kafka gives a topic a new
UUID each time it is created) and, at each start, compares it and the offsets
with the topic. A mismatch raises LabError instead of skipping or re-reading data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from labkit import kafka_broker
from labkit.config import Settings
from labkit.processes import LabError

log = logging.getLogger(__name__)

# Written by labkit into the checkpoint folder. Spark 4.2.0 restarts a query with this
# file beside its own ones, as the recovery tests check.
TOPIC_FILE = "labkit-topic.json"
RESET_HINT = (
    "Run 'labkit lab reset' to empty the topic, the tables and the checkpoints together, "
    "or delete the checkpoint folder to read the topic again from its first offset"
)


@dataclass(frozen=True)
class TopicState:
    """A topic's id and, per partition, its first and next-to-write offsets."""

    topic: str
    topic_id: str
    beginning: dict[int, int]
    end: dict[int, int]


def describe_topic(settings: Settings) -> TopicState:
    """Return the id and offsets of settings.topic; raise LabError when it does not exist."""
    admin = kafka_broker.admin_client(settings)
    try:
        description = admin.describe_topics([settings.topic])[0]
    except KafkaError as error:
        raise LabError(
            f"could not describe topic {settings.topic} at {settings.kafka_bootstrap} "
            f"({error}); check the lab with 'labkit lab status'"
        ) from error
    finally:
        admin.close()
    if description["error_code"] != 0 or not description["partitions"]:
        raise LabError(
            f"topic {settings.topic} not found at {settings.kafka_bootstrap} "
            f"(error code {description['error_code']}); create it with 'labkit lab up'"
        )

    partitions = [
        TopicPartition(settings.topic, partition["partition_index"])
        for partition in description["partitions"]
    ]
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        beginning = consumer.beginning_offsets(partitions)
        end = consumer.end_offsets(partitions)
    finally:
        consumer.close()
    return TopicState(
        topic=settings.topic,
        topic_id=str(description["topic_id"]),
        beginning={tp.partition: offset for tp, offset in beginning.items()},
        end={tp.partition: offset for tp, offset in end.items()},
    )


def _batch_files(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(path.name) for path in folder.iterdir() if path.name.isdigit())


def last_planned_batch(checkpoint: Path) -> tuple[int, dict[str, dict[int, int]]] | None:
    """Return the newest batch id in checkpoint/offsets and the end offsets it reads up to.

    The offsets are by topic name, then by partition number. Spark writes
    offsets/N before batch N runs, so batch N may not have finished.
    """
    batches = _batch_files(checkpoint / "offsets")
    if not batches:
        return None
    batch_id = batches[-1]
    # Line 1 is the format version, line 2 the batch metadata, line 3 the Kafka offsets.
    lines = (checkpoint / "offsets" / str(batch_id)).read_text().splitlines()
    by_topic = json.loads(lines[-1])
    offsets = {
        topic: {int(partition): int(offset) for partition, offset in partitions.items()}
        for topic, partitions in by_topic.items()
    }
    return batch_id, offsets


def last_committed_batch(checkpoint: Path) -> int | None:
    """Return the newest batch id in checkpoint/commits: Spark writes it once the sink returned."""
    batches = _batch_files(checkpoint / "commits")
    return batches[-1] if batches else None


def _stored_topic(checkpoint: Path) -> dict[str, str] | None:
    try:
        return json.loads((checkpoint / TOPIC_FILE).read_text())
    except FileNotFoundError:
        return None


def _store_topic(checkpoint: Path, state: TopicState) -> None:
    checkpoint.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"topic": state.topic, "topic_id": state.topic_id})
    (checkpoint / TOPIC_FILE).write_text(text + "\n")


def _offset_problems(planned: dict[int, int], state: TopicState) -> list[str]:
    problems = []
    for partition, offset in sorted(planned.items()):
        if partition not in state.end:
            problems.append(f"partition {partition} is in the checkpoint but not in the topic")
        elif offset > state.end[partition]:
            problems.append(
                f"partition {partition}: the checkpoint read up to offset {offset}, "
                f"but the topic ends at offset {state.end[partition]}"
            )
        elif offset < state.beginning[partition]:
            problems.append(
                f"partition {partition}: the checkpoint read up to offset {offset}, but the "
                f"topic starts at offset {state.beginning[partition]}, so offsets {offset} to "
                f"{state.beginning[partition] - 1} were deleted before the stream read them"
            )
    return problems


def verify_topic(settings: Settings, checkpoint: Path) -> TopicState:
    """Raise LabError unless the checkpoint's offsets can continue in settings.topic.

    A checkpoint with no offsets yet matches any topic. On success, the topic's
    id is stored in the checkpoint folder when it was missing, and the topic's
    state is returned.
    """
    state = describe_topic(settings)
    planned = last_planned_batch(checkpoint)
    stored = _stored_topic(checkpoint)
    if planned is None:
        if stored is None or stored.get("topic_id") != state.topic_id:
            _store_topic(checkpoint, state)
        return state

    batch_id, offsets_by_topic = planned
    problems = []
    if settings.topic not in offsets_by_topic:
        problems.append(f"it reads topic {', '.join(sorted(offsets_by_topic))}")
    elif stored is not None and stored.get("topic_id") != state.topic_id:
        problems.append(
            f"the topic was deleted and created again after the checkpoint was written "
            f"(topic id {stored.get('topic_id')} then, {state.topic_id} now)"
        )
    else:
        problems.extend(_offset_problems(offsets_by_topic[settings.topic], state))

    if problems:
        log.error(
            "checkpoint %s (batch %d) does not match topic %s: %s",
            checkpoint, batch_id, settings.topic, "; ".join(problems),
        )
        raise LabError(
            f"checkpoint {checkpoint} does not match topic {settings.topic}: "
            f"{'; '.join(problems)}. Starting the query would skip or re-read messages "
            f"without notice. {RESET_HINT}."
        )
    if stored is None:
        # NOTE: a checkpoint written before labkit stored topic ids is checked by its
        # offsets alone, which cannot see a topic recreated with at least as many messages.
        _store_topic(checkpoint, state)
    return state
