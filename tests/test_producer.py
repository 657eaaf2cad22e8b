"""The producer against the real broker: confirmed delivery, keys, raw bytes and failures."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from labkit import producer
from labkit.generator import GeneratorConfig, build_world, generate_transactions
from labkit.processes import LabError

from .conftest import LOADED_COUNT, LOADED_SEED, consume_all

LABKIT = str(Path(sys.executable).with_name("labkit"))


def test_generated_transactions_arrive_keyed_by_card(scratch_topic):
    # The same count and seed as the loaded lab, so the dimension rows and
    # fraud labels this writes to Postgres are the ones already there.
    result = producer.produce_generated(scratch_topic, count=LOADED_COUNT, seed=LOADED_SEED)
    records = consume_all(scratch_topic, LOADED_COUNT)
    config = GeneratorConfig()
    expected = {
        t.transaction_id: t
        for t in generate_transactions(build_world(config), config, LOADED_COUNT, LOADED_SEED)
    }

    assert result.sent == LOADED_COUNT
    assert result.delivered == LOADED_COUNT
    assert result.failed == []
    assert len(records) == LOADED_COUNT
    for record in records:
        message = json.loads(record.value)
        transaction = expected[message["transaction_id"]]
        assert message == transaction.to_message()
        assert record.key == transaction.card_id.encode()


def test_one_card_stays_in_one_partition(scratch_topic):
    producer.produce_generated(scratch_topic, count=LOADED_COUNT, seed=LOADED_SEED)
    partitions_by_card: dict[bytes, set[int]] = {}
    for record in consume_all(scratch_topic, LOADED_COUNT):
        partitions_by_card.setdefault(record.key, set()).add(record.partition)

    assert max(len(partitions) for partitions in partitions_by_card.values()) == 1
    assert len({p for ps in partitions_by_card.values() for p in ps}) == 3


def test_raw_file_lines_arrive_byte_for_byte(scratch_topic, tmp_path):
    lines = [
        b'{"transaction_id": "t-1"}',
        b"not json at all",
        b"",
        b"\xff\xfe invalid utf-8",
        b'{"note": "windows line end"}\r',
        b'{"nul": "a\x00b"}',
    ]
    raw_file = tmp_path / "bad.jsonl"
    raw_file.write_bytes(b"\n".join(lines) + b"\n")

    result = producer.produce_raw_file(scratch_topic, raw_file)
    records = sorted(consume_all(scratch_topic, len(lines)), key=lambda r: r.timestamp)

    assert result.delivered == len(lines)
    assert sorted(record.value for record in records) == sorted(lines)
    assert all(record.key is None for record in records)


def test_read_raw_lines_keeps_a_last_line_without_newline(tmp_path):
    raw_file = tmp_path / "two.txt"
    raw_file.write_bytes(b"first\nsecond")

    assert producer.read_raw_lines(raw_file) == [b"first", b"second"]


def test_undeliverable_messages_are_named_and_exit_nonzero(lab_running, tmp_path):
    raw_file = tmp_path / "three.jsonl"
    raw_file.write_bytes(b"{}\n{}\n{}\n")
    # The broker does not create topics on demand, so no message can be delivered.
    environment = dict(os.environ, LAB_TOPIC=f"missing-{uuid.uuid4().hex[:8]}")
    result = subprocess.run(
        [LABKIT, "produce", "--raw-file", str(raw_file)],
        env=environment, capture_output=True, text=True, timeout=120,
    )
    summary = json.loads(result.stdout)

    assert result.returncode == 1
    assert summary["delivered"] == 0
    assert summary["failed"] == 3
    for number in (1, 2, 3):
        assert f"three.jsonl:{number}" in result.stderr


def test_unreachable_broker_raises_lab_error(lab_running):
    from labkit.processes import port_is_free

    port = 39999
    assert port_is_free("127.0.0.1", port)
    settings = dataclasses.replace(lab_running, kafka_bootstrap=f"127.0.0.1:{port}")

    with pytest.raises(LabError, match="could not reach Kafka at 127.0.0.1:39999"):
        producer.make_producer(settings)
