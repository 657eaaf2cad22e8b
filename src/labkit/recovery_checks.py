"""Self-check of notebook 08's exercise: every transaction sent is loaded exactly once.

The check reads the scratch topic from Kafka and the tables from PostgreSQL, so
it holds for any batch size and any kill point. A wrong state raises
AssertionError with a hint, and a right one prints a line that starts with
"Correct:".
"""

from __future__ import annotations

from collections.abc import Iterable

from labkit import report, warehouse
from labkit.config import Settings

# Ids listed in a failure message; the rest are only counted.
MAX_IDS_SHOWN = 5

_ID_COUNTS = """
select transaction_id,
       count(*) filter (where source = 'fact') as facts,
       count(*) filter (where source = 'duplicate') as duplicates
from (
    select transaction_id, 'fact' as source from fact_transaction
    where kafka_topic = %(topic)s and transaction_id = any(%(ids)s)
    union all
    select transaction_id, 'duplicate' from duplicate_message
    where kafka_topic = %(topic)s and transaction_id = any(%(ids)s)
) as found
group by transaction_id
"""


def _shown(ids: list[str]) -> str:
    more = f" and {len(ids) - MAX_IDS_SHOWN} more" if len(ids) > MAX_IDS_SHOWN else ""
    return ", ".join(sorted(ids)[:MAX_IDS_SHOWN]) + more


def check_exactly_once(settings: Settings, transaction_ids: Iterable[str]) -> None:
    """Check that each id was loaded once into fact_transaction and counted nowhere else.

    Each id must have one row in fact_transaction from settings.topic and none
    in duplicate_message. The stream must have caught up, with no message
    unaccounted for. The stream_batch rows of settings.query_name must add up
    to the messages in the topic, which shows that no batch was counted twice.
    """
    expected = sorted(set(transaction_ids))
    assert expected, "transaction_ids is empty: pass the ids of the transactions you sent"
    found = warehouse.query(settings, _ID_COUNTS, {"topic": settings.topic, "ids": expected})
    facts = dict(zip(found["transaction_id"], found["facts"], strict=True))
    duplicates = dict(zip(found["transaction_id"], found["duplicates"], strict=True))
    missing = [tid for tid in expected if facts.get(tid, 0) == 0]
    doubled = [tid for tid in expected if duplicates.get(tid, 0) > 0]

    assert not missing, (
        f"{len(missing)} of {len(expected)} transactions are not in fact_transaction: "
        f"{_shown(missing)}. Did the restarted stream run to its end? Run "
        "'labkit stream --available-now' again with the scratch settings and check its log."
    )
    assert not doubled, (
        f"{len(doubled)} of {len(expected)} transactions were also counted in "
        f"duplicate_message: "
        f"{_shown(doubled)}. A replayed batch must not record its own rows as duplicates."
    )

    counts = report.stream_counts(settings)
    assert counts["unaccounted"] == 0, (
        f"{counts['unaccounted']} messages of {settings.topic} are neither loaded, "
        "quarantined nor duplicates: the stream has not caught up. Restart it with "
        "'labkit stream --available-now' and check again."
    )
    batches = warehouse.query(
        settings,
        "select coalesce(sum(messages), 0) as messages from stream_batch where query_name = %s",
        (settings.query_name,),
    )
    batch_messages = int(batches["messages"].iloc[0])
    assert batch_messages == counts["produced"], (
        f"the stream_batch rows of {settings.query_name} count {batch_messages} messages, but "
        f"the topic contains {counts['produced']}: a batch was counted twice or not at all."
    )
    print(
        f"Correct: all {len(expected)} transactions are in fact_transaction exactly once, and "
        f"produced {counts['produced']} = loaded {counts['loaded']} + quarantined "
        f"{counts['quarantined']} + duplicates {counts['duplicates']}."
    )
