"""Detection-quality metrics on small hand-made tables, with each expected value worked out."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

from labkit import metrics

DAY_1, DAY_2, DAY_3 = date(2018, 8, 8), date(2018, 8, 9), date(2018, 8, 10)


def scored(rows: list[tuple]) -> pd.DataFrame:
    """Build scored transactions from (day, hour, card, score, flagged, is_fraud, scenario)."""
    frame = pd.DataFrame(
        rows, columns=["day", "hour", "card_id", "score", "flagged", "is_fraud", "scenario"]
    )
    frame["event_time"] = pd.to_datetime(frame["day"]) + pd.to_timedelta(frame["hour"], "h")
    frame["event_time"] = frame["event_time"].dt.tz_localize("UTC")
    frame["transaction_id"] = [f"t{number}" for number in range(len(frame))]
    return frame.drop(columns=["day", "hour"])


# Day 1: 4 transactions, 2 frauds; flagged: one fraud and one honest.
# Day 2: 3 transactions, 1 fraud; flagged: nothing.
FLAGS = scored([
    (DAY_1, 1, "a", 0.9, True, True, "s1_high_amount"),
    (DAY_1, 2, "b", 0.8, True, False, None),
    (DAY_1, 3, "c", 0.1, False, True, "s2_compromised_terminal"),
    (DAY_1, 4, "d", 0.0, False, False, None),
    (DAY_2, 1, "a", 0.2, False, True, "s1_high_amount"),
    (DAY_2, 2, "b", 0.7, False, False, None),
    (DAY_2, 3, "c", 0.0, False, False, None),
])


def test_quality_overall_counts_flags():
    result = metrics.quality(FLAGS)

    # TP = 1, FP = 1, FN = 2: precision 1/2, recall 1/3, F1 = 2 / (2 + 1 + 2).
    assert result["true_positives"] == 1
    assert result["precision"] == pytest.approx(1 / 2)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx(2 / 5)


def test_quality_overall_average_precision():
    # Ranked scores: 0.9 F, 0.8, 0.7, 0.2 F, 0.1 F, 0.0, 0.0.
    # Precision at the frauds: 1/1, 2/4, 3/5; AP = (1 + 1/2 + 3/5) / 3 = 0.7.
    assert metrics.quality(FLAGS)["average_precision"] == pytest.approx(0.7)


def test_quality_by_day_splits_days():
    result = metrics.quality_by_day(FLAGS)

    assert list(result.index) == [DAY_1, DAY_2]
    assert result.loc[DAY_1, "precision"] == pytest.approx(1 / 2)
    assert result.loc[DAY_1, "recall"] == pytest.approx(1 / 2)
    assert result.loc[DAY_1, "f1"] == pytest.approx(1 / 2)
    # Day 1 ranked: 0.9 F, 0.8, 0.1 F, 0.0; AP = (1/1 + 2/3) / 2 = 5/6.
    assert result.loc[DAY_1, "average_precision"] == pytest.approx(5 / 6)


def test_quality_by_day_without_flags_is_nan_precision():
    day_2 = metrics.quality_by_day(FLAGS).loc[DAY_2]

    # Nothing flagged: precision 0/0 is NaN, recall 0/1 is 0, F1 = 0 / (0 + 0 + 1) = 0.
    assert math.isnan(day_2["precision"])
    assert day_2["recall"] == 0
    assert day_2["f1"] == 0
    # The fraud (0.2) is ranked 2nd of 3: AP = 1/2.
    assert day_2["average_precision"] == pytest.approx(1 / 2)


def test_average_precision_tied_scores_share_precision():
    # All four tied: one threshold where 2 of 4 are fraud, so each fraud gets 1/2.
    # Ranking frauds first would give 1; ranking them last, (1/3 + 2/4) / 2.
    score = [0.5, 0.5, 0.5, 0.5]
    is_fraud = [True, False, True, False]

    assert metrics.average_precision(score, is_fraud) == pytest.approx(0.5)


def test_average_precision_ties_after_a_clear_leader():
    # Thresholds: 0.9 (1 fraud of 1), then 0.4 (2 frauds of 4 in all).
    # AP = (1 * 1/1 + 1 * 2/4) / 2 = 0.75, whatever the order of the tied rows.
    forward = metrics.average_precision([0.9, 0.4, 0.4, 0.4], [True, True, False, False])
    backward = metrics.average_precision([0.9, 0.4, 0.4, 0.4], [True, False, False, True])

    assert forward == pytest.approx(0.75)
    assert backward == pytest.approx(0.75)


def test_average_precision_without_fraud_is_nan():
    assert math.isnan(metrics.average_precision([0.3, 0.2], [False, False]))


def test_average_precision_rejects_nan_score():
    with pytest.raises(ValueError, match="NaN"):
        metrics.average_precision([0.3, float("nan")], [True, False])


# Day 1: cards a (0.9, fraud), b (0.8), c (0.7, fraud) and e. Card e has an
# honest 0.95 and a fraud at 0.05, so it scores 0.95 and is fraudulent.
# Day 2: a again (0.95, fraud), c (0.6, fraud), d (0.5).
# Day 3: no transactions.
CARDS = scored([
    (DAY_1, 1, "a", 0.9, False, True, "s1_high_amount"),
    (DAY_1, 2, "b", 0.8, False, False, None),
    (DAY_1, 3, "c", 0.7, False, True, "s3_compromised_customer"),
    (DAY_1, 4, "e", 0.95, False, False, None),
    (DAY_1, 5, "e", 0.05, False, True, "s2_compromised_terminal"),
    (DAY_2, 1, "a", 0.95, False, True, "s1_high_amount"),
    (DAY_2, 2, "c", 0.6, False, True, "s3_compromised_customer"),
    (DAY_2, 3, "d", 0.5, False, False, None),
])


def test_card_precision_at_2_over_three_days():
    result = metrics.card_precision_at_k(CARDS, k=2, start=DAY_1, end=DAY_3)

    # Day 1 top 2: e (0.95, fraud), a (0.9, fraud): 2/2; both leave later rankings.
    # Day 2 without a: c (0.6, fraud), d (0.5): 1/2. Day 3 has no card: 0.
    assert list(result.per_day["card_precision"]) == [1.0, 0.5, 0.0]
    assert list(result.per_day["cards"]) == [4, 2, 0]
    assert result.mean == pytest.approx(0.5)


def test_card_found_earlier_leaves_later_rankings():
    result = metrics.card_precision_at_k(CARDS, k=1, start=DAY_1, end=DAY_2)

    # Day 1 top 1: e (0.95, fraud): 1/1. Day 2: a (0.95, fraud) is still in,
    # because it was not in day 1's top 1: 1/1.
    assert list(result.per_day["card_precision"]) == [1.0, 1.0]
    assert list(result.per_day["cards"]) == [4, 3]


def test_card_precision_k_above_card_count():
    result = metrics.card_precision_at_k(CARDS, k=5, start=DAY_1, end=DAY_3)

    # Day 1: all 4 cards ranked, 3 fraudulent: 3/5. All three leave, so day 2
    # ranks d alone: 0/5. Day 3: 0/5. Mean = (3/5) / 3 = 1/5.
    assert list(result.per_day["found"]) == [3, 0, 0]
    assert result.per_day.loc[DAY_1, "card_precision"] == pytest.approx(3 / 5)
    assert result.mean == pytest.approx(1 / 5)


def test_card_precision_breaks_ties_by_card_id():
    tied = scored([
        (DAY_1, 1, "b", 0.5, False, True, "s1_high_amount"),
        (DAY_1, 2, "a", 0.5, False, False, None),
    ])

    result = metrics.card_precision_at_k(tied, k=1, start=DAY_1, end=DAY_1)

    # a and b tie at 0.5; a comes first and is honest.
    assert result.mean == 0.0


def test_card_precision_skips_known_cards():
    # The assessed period is days 2 and 3 after a one-day delay period (day 1).
    # Cards a, c and e had a fraud on day 1, so they are known and day 2 ranks d alone.
    result = metrics.card_precision_at_k(CARDS, k=1, start=DAY_2, end=DAY_3, delay_days=1)

    assert list(result.per_day["cards"]) == [1, 0]
    assert list(result.per_day["card_precision"]) == [0.0, 0.0]


def test_card_precision_without_delay_keeps_every_card():
    result = metrics.card_precision_at_k(CARDS, k=1, start=DAY_2, end=DAY_2)

    # Day 2 with a (0.95, fraud) first: 1/1, from 3 cards.
    assert result.per_day.loc[DAY_2, "cards"] == 3
    assert result.mean == 1.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"k": 0, "start": DAY_1, "end": DAY_2}, "k must be at least 1"),
        ({"k": 1, "start": DAY_2, "end": DAY_1}, "must not be before"),
        ({"k": 1, "start": DAY_1, "end": DAY_2, "delay_days": -1}, "delay_days"),
    ],
)
def test_card_precision_rejects_invalid_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        metrics.card_precision_at_k(CARDS, **arguments)


def test_recall_by_scenario():
    result = metrics.recall_by_scenario(FLAGS)

    # s1: 2 frauds, 1 flagged; s2: 1 fraud, none flagged.
    assert list(result.index) == ["s1_high_amount", "s2_compromised_terminal"]
    assert list(result["frauds"]) == [2, 1]
    assert list(result["recall"]) == [0.5, 0.0]


def test_precision_by_rule():
    frame = FLAGS.copy()
    frame["fraud_rules"] = [
        ["high_amount"], ["high_amount", "large_online"], [], ["large_online"], [], [], [],
    ]

    result = metrics.precision_by_rule(frame)

    # high_amount fired on t0 (fraud) and t1: 1/2; large_online on t1 and t3: 0/2.
    assert list(result.index) == ["high_amount", "large_online"]
    assert list(result["fired"]) == [2, 2]
    assert list(result["precision"]) == [0.5, 0.0]


def test_metrics_reject_missing_columns():
    with pytest.raises(ValueError, match="card_id"):
        metrics.quality(FLAGS.drop(columns=["card_id"]))


def test_metrics_reject_naive_event_time():
    naive = FLAGS.assign(event_time=FLAGS["event_time"].dt.tz_localize(None))

    with pytest.raises(ValueError, match="timezone-aware"):
        metrics.quality(naive)


def test_days_are_utc_calendar_days():
    # 23:30 UTC on day 1 is 01:30 on day 2 in Paris; it still counts for day 1.
    late = scored([(DAY_1, 23.5, "a", 0.9, True, True, "s1_high_amount")])
    paris = late.assign(event_time=late["event_time"].dt.tz_convert("Europe/Paris"))

    assert paris["event_time"].dt.date.iloc[0] == DAY_2
    assert list(metrics.quality_by_day(paris).index) == [DAY_1]
