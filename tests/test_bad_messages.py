"""The sample file of bad messages, sent with `labkit produce` and streamed with `labkit stream`.

Each line must end up loaded, quarantined with its reason, or recorded as a
duplicate, as the table in bad_message_cases.py lists. The scratch topic has one
partition, so line N is at offset N - 1 and each outcome can be traced to its line.
"""

from __future__ import annotations

import inspect
import json
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal

import psycopg2
import pytest

from labkit import kafka_broker, recovery, report, validation
from labkit.config import Settings

from .bad_message_cases import (
    CASES,
    DUPLICATE,
    LOADED,
    SAMPLE_FILE,
    SENT_TWICE_ID,
    UNKNOWN_CARD,
    UNKNOWN_CUSTOMER,
    UNKNOWN_MERCHANT,
    file_bytes,
)


def every_reason() -> set[str]:
    """Return every reject reason validation.py can give.

    The fixed reasons are read from the module's source, so a reason added
    there without a sample line makes test_sample_file_covers_every_reason fail.
    """
    source = inspect.getsource(validation)
    fixed = set(re.findall(r'F\.lit\("([a-z0-9_]+)"\)', source))
    fields = (*validation.REQUIRED_TEXT_FIELDS, "event_time")
    ids = ("transaction_id", "customer_id", "card_id", "merchant_id")
    return (
        fixed
        | {f"missing_{name}" for name in fields}
        | {f"invalid_type_{name}" for name in validation.REQUIRED_TEXT_FIELDS}
        | {f"invalid_{name}" for name in ids}
    )


@dataclass(frozen=True)
class SampleRun:
    """What producing and streaming the sample file did, read back from Kafka and PostgreSQL."""

    settings: Settings
    produce_code: int
    produce_summary: dict
    stream_code: int
    stream_log: str
    outcomes: dict[int, list[str]]
    counts: dict[str, int]
    quarantined_values: dict[int, bytes | None]
    inferred: dict[str, list[bool]]
    sent_twice: list[tuple[int, Decimal]]


def rows(settings: Settings, sql: str, params: tuple) -> list[tuple]:
    with psycopg2.connect(**settings.pg_connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        found = cur.fetchall()
    conn.close()
    return found


def read_outcomes(settings: Settings) -> dict[int, list[str]]:
    outcomes: dict[int, list[str]] = {}
    for offset, outcome in rows(
        settings,
        "select kafka_offset, %s from fact_transaction where kafka_topic = %s "
        "union all select kafka_offset, reason from quarantine where kafka_topic = %s "
        "union all select kafka_offset, %s from duplicate_message where kafka_topic = %s",
        (LOADED, settings.topic, settings.topic, DUPLICATE, settings.topic),
    ):
        outcomes.setdefault(offset, []).append(outcome)
    return outcomes


def read_inferred(settings: Settings) -> dict[str, list[bool]]:
    return {
        "customer": [flag for (flag,) in rows(
            settings, "select is_inferred from dim_customer where customer_id = %s",
            (UNKNOWN_CUSTOMER,))],
        "card": [flag for (flag,) in rows(
            settings, "select is_inferred from dim_card where card_id = %s", (UNKNOWN_CARD,))],
        "merchant": [flag for (flag,) in rows(
            settings, "select is_inferred from dim_merchant where merchant_id = %s",
            (UNKNOWN_MERCHANT,))],
    }


@pytest.fixture(scope="module")
def sample_run(lab_running: Settings):
    """Send the sample file to a new one-partition topic and stream it; clean up afterwards."""
    suffix = uuid.uuid4().hex[:8]
    scratch = recovery.scratch_settings(
        lab_running,
        topic=f"test-bad-messages-{suffix}",
        query_name=f"test_bad_messages_{suffix}",
        topic_partitions=1,
    )
    kafka_broker.create_topic(scratch)
    try:
        produced = recovery.run_labkit(
            scratch, "produce", "--raw-file", str(SAMPLE_FILE), log_name="test-bad-produce"
        )
        streamed = recovery.run_labkit(
            scratch, "stream", "--available-now", log_name="test-bad-stream"
        )
        yield SampleRun(
            settings=scratch,
            produce_code=produced.returncode,
            produce_summary=json.loads(produced.stdout or "{}"),
            stream_code=streamed.returncode,
            stream_log=streamed.log,
            outcomes=read_outcomes(scratch),
            counts=report.stream_counts(scratch),
            quarantined_values={
                offset: None if raw is None else bytes(raw)
                for offset, raw in rows(
                    scratch,
                    "select kafka_offset, raw_value from quarantine where kafka_topic = %s",
                    (scratch.topic,),
                )
            },
            inferred=read_inferred(scratch),
            sent_twice=rows(
                scratch,
                "select kafka_offset, amount from fact_transaction where transaction_id = %s",
                (SENT_TWICE_ID,),
            ),
        )
    finally:
        recovery.remove_scratch(scratch)


def test_sample_file_matches_cases():
    assert SAMPLE_FILE.read_bytes() == file_bytes(), (
        "data/samples/bad_messages.jsonl differs from tests/bad_message_cases.py; "
        "rewrite it with '.venv/bin/python -m tests.bad_message_cases'"
    )


def test_sample_file_contains_hard_bytes():
    content = SAMPLE_FILE.read_bytes()

    assert b"\x00" in content
    assert b"\xff\xfe" in content
    assert b"\n\n" in content
    assert b"\r\n" in content


def test_sample_file_covers_every_reason():
    expected = {sample.expected for sample in CASES}

    assert every_reason() - expected == set()
    assert LOADED in expected
    assert DUPLICATE in expected


def test_case_names_are_unique():
    names = [sample.name for sample in CASES]

    assert len(set(names)) == len(names)


def test_produce_delivers_every_line(sample_run):
    assert sample_run.produce_code == 0
    assert sample_run.produce_summary.get("delivered") == len(CASES)
    assert sample_run.produce_summary.get("failed") == 0


def test_stream_drains_the_topic(sample_run):
    assert sample_run.stream_code == 0, sample_run.stream_log[-3000:]


@pytest.mark.parametrize(
    ("offset", "sample"), list(enumerate(CASES)), ids=[sample.name for sample in CASES]
)
def test_line_gets_expected_outcome(sample_run, offset, sample):
    assert sample_run.outcomes.get(offset) == [sample.expected], sample.value[:200]


def test_quarantine_keeps_each_message_byte_for_byte(sample_run):
    quarantined = {
        offset: sample.value for offset, sample in enumerate(CASES)
        if sample.expected not in (LOADED, DUPLICATE)
    }

    assert sample_run.quarantined_values == quarantined


def test_counts_reconcile(sample_run):
    counts = sample_run.counts
    expected = [sample.expected for sample in CASES]

    assert counts["produced"] == len(CASES)
    assert counts["loaded"] == expected.count(LOADED)
    assert counts["duplicates"] == expected.count(DUPLICATE)
    assert counts["quarantined"] == len(CASES) - expected.count(LOADED) - expected.count(DUPLICATE)
    assert counts["unaccounted"] == 0
    assert counts["produced"] == counts["loaded"] + counts["quarantined"] + counts["duplicates"]


def test_unknown_dimensions_become_inferred_rows(sample_run):
    assert sample_run.inferred == {"customer": [True], "card": [True], "merchant": [True]}


def test_first_copy_of_a_resent_transaction_wins(sample_run):
    first_offset = next(
        offset for offset, sample in enumerate(CASES) if sample.name == "sent_twice_first"
    )

    assert sample_run.sent_twice == [(first_offset, Decimal("25.00"))]
