"""Fraud rules and the features they read, in a real Spark session on hand-made rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.sql.streaming.state import GroupState

from labkit.features import (
    CARD_STATE,
    CardHistory,
    distance_km,
    update_cards,
    with_terminal_feedback,
)
from labkit.rules import DEFAULT_RULES, Rule, apply_rules

# The feature columns the stateful rules read, with their Spark types.
FEATURE_TYPES = {
    "card_payments_10m": "int",
    "card_prior_payments": "int",
    "card_mean_amount": "decimal(12,2)",
    "travel_km": "decimal(9,1)",
    "travel_kmh": "decimal(10,1)",
    "terminal_confirmed_frauds": "int",
}
ORDINARY = {"amount": "42.10", "channel": "card_present", "mcc": "5411", "currency": "EUR"}


def scored(spark, rules=DEFAULT_RULES, **values) -> Row:
    """Apply rules to one payment: ORDINARY, changed by values; features default to null."""
    columns = {**ORDINARY, **values}
    frame = spark.range(1).select(
        F.lit(columns["amount"]).cast("decimal(12,2)").alias("amount"),
        *[F.lit(columns[name]).alias(name) for name in ("channel", "mcc", "currency")],
        *[F.lit(columns.get(name)).cast(kind).alias(name) for name, kind in FEATURE_TYPES.items()],
    )
    return apply_rules(frame, rules).collect()[0]


def test_no_rule_fires_on_an_ordinary_payment(spark):
    row = scored(spark)

    assert row.fraud_rules == []
    assert row.fraud_score == Decimal("0.000")
    assert row.is_flagged is False


def test_two_rules_combine_as_independent_evidence(spark):
    # high_amount (0.95) and large_online (0.3): 1 - 0.05 * 0.7.
    row = scored(spark, amount="800.00", channel="ecommerce")

    assert row.fraud_rules == ["high_amount", "large_online"]
    assert row.fraud_score == Decimal("0.965")
    assert row.is_flagged is True


def test_score_stays_at_most_one_when_every_rule_fires(spark):
    row = scored(
        spark, amount="900.00", channel="ecommerce", mcc="7995", card_payments_10m=6,
        card_prior_payments=20, card_mean_amount="40.00", travel_km="800.0",
        travel_kmh="4000.0", terminal_confirmed_frauds=3,
    )

    assert row.fraud_rules == [rule.name for rule in DEFAULT_RULES]
    assert row.fraud_score == Decimal("1.000")


def test_weak_rule_alone_does_not_flag(spark):
    row = scored(spark, amount="60.00", mcc="7995")

    assert row.fraud_rules == ["high_risk_merchant"]
    assert row.fraud_score == Decimal("0.100")
    assert row.is_flagged is False


@pytest.mark.parametrize(
    ("rule", "fires", "quiet"),
    [
        ("card_velocity", {"card_payments_10m": 4}, {"card_payments_10m": 3}),
        ("amount_above_profile",
         {"amount": "150.00", "card_prior_payments": 5, "card_mean_amount": "50.00"},
         {"amount": "149.99", "card_prior_payments": 5, "card_mean_amount": "50.00"}),
        ("amount_above_profile",
         {"amount": "150.00", "card_prior_payments": 5, "card_mean_amount": "50.00"},
         {"amount": "150.00", "card_prior_payments": 4, "card_mean_amount": "50.00"}),
        ("impossible_travel", {"travel_km": "300.0", "travel_kmh": "900.1"},
         {"travel_km": "300.0", "travel_kmh": "900.0"}),
        ("impossible_travel", {"travel_km": "300.0", "travel_kmh": "5000.0"},
         {"travel_km": "299.9", "travel_kmh": "5000.0"}),
        ("compromised_terminal", {"terminal_confirmed_frauds": 2},
         {"terminal_confirmed_frauds": 1}),
    ],
)
def test_stateful_rule_fires_at_its_threshold(spark, rule, fires, quiet):
    assert scored(spark, **fires).fraud_rules == [rule]
    assert scored(spark, **quiet).fraud_rules == []


def test_rule_with_missing_feature_does_not_fire(spark):
    # An online payment has no travel; a new card has no profile.
    row = scored(spark, amount="100.00", card_prior_payments=0)

    assert row.fraud_rules == []


def test_custom_rule_is_applied(spark):
    rules = [Rule("euro_only", "currency <> 'EUR'", 1.0, "any payment not in euro")]

    assert scored(spark, rules, currency="GBP").fraud_rules == ["euro_only"]
    assert scored(spark, rules).fraud_rules == []


def test_rules_must_have_unique_names(spark):
    with pytest.raises(ValueError, match="unique"):
        scored(spark, [DEFAULT_RULES[0], DEFAULT_RULES[0]])


@pytest.mark.parametrize("name", ["Big Amount", "rule,two", "", "9lives"])
def test_rule_name_must_be_plain(spark, name):
    with pytest.raises(ValueError, match="rule name"):
        scored(spark, [Rule(name, "amount > 0", 0.5, "a rule with a bad name")])


@pytest.mark.parametrize("weight", [0.0, 1.5, -0.2])
def test_rule_weight_must_be_a_probability(spark, weight):
    with pytest.raises(ValueError, match="weight"):
        scored(spark, [Rule("odd", "amount > 0", weight, "a rule with a bad weight")])


MINUTE_MS = 60_000


def test_card_history_counts_payments_in_the_last_ten_minutes():
    card = CardHistory()
    counts = [card.add(t * MINUTE_MS, 10.0, False, None, None)[0] for t in (0, 4, 8, 9, 18, 19)]

    # The window is (t - 10 minutes, t]: at minute 18 it contains minutes 9 and 18,
    # at minute 19 minute 9 has just left it.
    assert counts == [1, 2, 3, 4, 2, 2]


def test_card_history_profile_is_the_mean_of_earlier_payments():
    card = CardHistory()
    features = [card.add(t * MINUTE_MS, amount, False, None, None)
                for t, amount in enumerate((10.0, 20.0, 30.0, 400.0))]

    assert [(prior, mean) for _, prior, mean, *_ in features] == [
        (0, None), (1, 10.0), (2, 15.0), (3, 20.0),
    ]


def test_card_history_measures_travel_between_card_present_payments():
    card = CardHistory()
    card.add(0, 10.0, True, 48.8566, 2.3522)  # Paris
    online = card.add(10 * MINUTE_MS, 10.0, False, None, None)
    berlin = card.add(60 * MINUTE_MS, 10.0, True, 52.5200, 13.4050)

    assert online[3:5] == (None, None)
    assert berlin[3] == pytest.approx(878.0, abs=1.0)
    assert berlin[4] == pytest.approx(878.0, abs=1.0)  # one hour after Paris


def test_card_history_survives_a_round_trip_through_its_state():
    card = CardHistory()
    for t in range(3):
        card.add(t * MINUTE_MS, 10.0 * (t + 1), True, 10.0, 10.0)
    restored = CardHistory(card.as_state())

    assert restored.add(3 * MINUTE_MS, 40.0, True, 10.0, 10.0) == (4, 3, 20.0, 0.0, 0.0)


def _bucket_state(stored: tuple | None) -> GroupState:
    # The GroupState that PySpark's worker gives update_cards for one bucket.
    return GroupState(
        optionalValue=stored, batchProcessingTimeMs=0, eventTimeWatermarkMs=0,
        timeoutConf="NoTimeout", hasTimedOut=False, watermarkPresent=True,
        defined=stored is not None, updated=False, removed=False, timeoutTimestamp=-1,
        keyAsUnsafe=b"", valueSchema=CARD_STATE,
    )


def _card_payments(cards: str, first_offset: int) -> pd.DataFrame:
    # One payment a minute, in order, each by the card named by one letter of cards.
    start = pd.Timestamp("2018-06-01 12:00")
    count = len(cards)
    return pd.DataFrame({
        "transaction_id": [f"tx-{first_offset + i}" for i in range(count)],
        "event_time": [start + pd.Timedelta(minutes=first_offset + i) for i in range(count)],
        "card_id": list(cards),
        "amount": [10.0 * (i + 1) for i in range(count)],
        "channel": ["card_not_present"] * count,
        "merchant_latitude": [None] * count,
        "merchant_longitude": [None] * count,
        "reject_reason": [None] * count,
        "kafka_partition": [0] * count,
        "kafka_offset": [first_offset + i for i in range(count)],
    })


def test_bucket_keeps_each_card_history():
    state = _bucket_state(None)
    first = next(update_cards((3,), iter([_card_payments("ABAAB", 0)]), state))
    stored = state.get
    second = next(update_cards((3,), iter([_card_payments("BA", 5)]), _bucket_state(stored)))

    assert first["card_payments_10m"].tolist() == [1, 1, 2, 3, 2]
    assert first["card_prior_payments"].tolist() == [0, 0, 1, 2, 1]
    # A's payments were 10, 30 and 40, B's 20 and 50; the second batch reads them back.
    assert second["card_prior_payments"].tolist() == [2, 3]
    assert second["card_mean_amount"].tolist() == [35.0, pytest.approx(26.67, abs=0.01)]
    assert sorted(json.loads(stored[0])) == ["A", "B"]


def test_distance_between_identical_points_is_zero():
    assert distance_km(45.0, 7.0, 45.0, 7.0) == 0.0
    assert distance_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(20_015.1, abs=0.5)


def test_terminal_feedback_counts_frauds_confirmed_before_the_payment(spark):
    day = timedelta(days=1)
    now = datetime(2018, 6, 1, 12, tzinfo=UTC)
    payments = spark.createDataFrame(
        [("t", 0, offset, None, merchant, now) for offset, merchant in enumerate("AAB")],
        "kafka_topic string, kafka_partition int, kafka_offset long, reject_reason string, "
        "merchant_id string, event_time timestamp",
    )
    frauds = spark.createDataFrame(
        [
            ("A", [
                now - 7 * day,  # confirmed just now: counts
                now - 10 * day,  # counts
                now - 14 * day,  # too old for the window
                now - 6 * day,  # not confirmed yet
            ]),
            ("C", [now - 8 * day]),  # another terminal
        ],
        "merchant_id string, fraud_times array<timestamp>",
    )
    rows = with_terminal_feedback(payments, frauds).orderBy("kafka_offset").collect()

    assert [row.terminal_confirmed_frauds for row in rows] == [2, 2, 0]
