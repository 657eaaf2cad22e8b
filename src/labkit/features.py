"""Features for the stateful fraud rules: a card's recent history and a terminal's confirmed fraud.

Card features come from Spark's state store. The query groups the stream by
a bucket of cards (a hash of card_id), and update_cards keeps a few numbers
per card between micro-batches in its bucket's state. They are the card's
payment count and mean amount, the times of its payments in the last few
minutes, and the place and time of its last card-present payment. Every
transaction leaves with:

- card_payments_10m: payments on the card in the CARD_WINDOW up to this one, itself included;
- card_prior_payments and card_mean_amount: the count and mean amount of its earlier payments;
- travel_km and travel_kmh: distance and speed from the card's previous card-present payment.

The query's watermark trails the latest event time by WATERMARK_DELAY. A
transaction older than the watermark is late: the card's state may already have
forgotten the payments around it, so it gets no card features and
late_for_card_rules is true. It is still loaded, and the batch counts it.

Terminal feedback comes from the investigators. A fraud is confirmed
FEEDBACK_DELAY after it happened, as a real investigation would take days.
terminal_confirmed_frauds counts the frauds at the transaction's terminal that
happened in the FEEDBACK_WINDOW before that delay, so they were already confirmed
when the transaction happened. The confirmations are the fraud labels in
PostgreSQL; the Kafka messages never carry them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    StringType,
    StructField,
    StructType,
)

CARD_WINDOW = timedelta(minutes=10)
# A replay of weeks of data reads three Kafka partitions whose event times drift
# hours apart within one micro-batch. A delay of a day keeps such a replay on time.
WATERMARK_DELAY = "1 day"
FEEDBACK_DELAY = timedelta(days=7)
FEEDBACK_WINDOW = timedelta(days=7)
# PySpark builds a pandas DataFrame and a state row for every group in a
# micro-batch. Profiled on two cores, that cost about half a millisecond per
# group, most of a small batch's time when each card was a group. A fixed
# number of buckets, each containing the state of many cards, bounds it.
CARD_BUCKETS = 16
EARTH_RADIUS_KM = 6371.0

# The columns update_cards returns. The counts travel as doubles with NaN for
# null, because pandas would need a slow object column for integers with nulls.
# with_card_features casts them back to integers.
CARD_FEATURES = StructType([
    StructField("card_payments_10m", DoubleType()),
    StructField("card_prior_payments", DoubleType()),
    StructField("card_mean_amount", DoubleType()),
    StructField("travel_km", DoubleType()),
    StructField("travel_kmh", DoubleType()),
    StructField("late_for_card_rules", BooleanType()),
])
# One bucket's state: a JSON object from card_id to CardHistory.as_state().
# It is text because PySpark 4.2 fails to read an array in a state schema.
CARD_STATE = StructType([StructField("cards", StringType())])
_WINDOW_MS = int(CARD_WINDOW.total_seconds() * 1000)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_chord = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, half_chord)))


class CardHistory:
    """One card's state, and the features it gives each new payment in event-time order."""

    def __init__(self, state: tuple | None = None) -> None:
        payments, mean, recent, present_time, present_lat, present_lon = state or (
            0, 0.0, "", None, None, None
        )
        self.payments = int(payments)
        self.mean_amount = float(mean)
        self.recent = [int(time_ms) for time_ms in recent.split(",") if time_ms]
        self.present = (present_time, present_lat, present_lon)

    def as_state(self) -> tuple:
        """Return (payments, mean_amount, recent, present_time, present_lat, present_lon).

        Times are epoch milliseconds. recent contains the payment times still
        inside CARD_WINDOW as comma-separated text.
        """
        recent = ",".join(str(time_ms) for time_ms in self.recent)
        return (self.payments, self.mean_amount, recent, *self.present)

    def add(self, time_ms: int, amount: float, card_present: bool,
            latitude: float | None, longitude: float | None) -> tuple:
        """Remember a payment at time_ms and return its features before it.

        The features are card_payments_10m, card_prior_payments,
        card_mean_amount, travel_km and travel_kmh, in that order.
        """
        self.recent = [t for t in self.recent if t > time_ms - _WINDOW_MS]
        in_window = 1 + sum(1 for t in self.recent if t <= time_ms)
        prior, mean = self.payments, (round(self.mean_amount, 2) if self.payments else None)

        km = kmh = None
        previous_time, previous_lat, previous_lon = self.present
        located = card_present and latitude is not None and longitude is not None
        if located and previous_time is not None and previous_time <= time_ms:
            km = distance_km(previous_lat, previous_lon, latitude, longitude)
            hours = max(time_ms - previous_time, 1000) / 3_600_000
            km, kmh = round(km, 1), round(km / hours, 1)
        if located and (previous_time is None or previous_time <= time_ms):
            self.present = (time_ms, latitude, longitude)

        self.payments += 1
        self.mean_amount += (amount - self.mean_amount) / self.payments
        self.recent.append(time_ms)
        return in_window, prior, mean, km, kmh


def _nullable(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def update_cards(
    key: tuple, frames: Iterator[pd.DataFrame], state: GroupState
) -> Iterator[pd.DataFrame]:
    """applyInPandasWithState function: add CARD_FEATURES to one card bucket's rows.

    Rows that failed validation (reject_reason set) pass through without features
    and leave the state alone, as do rows without a card (key is (None,)).
    """
    frames = list(frames)
    rows = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    count = len(rows)
    numbers = [np.full(count, np.nan) for _ in range(len(CARD_FEATURES.fields) - 1)]
    late = np.zeros(count, dtype=bool)

    usable = rows["reject_reason"].isna().to_numpy()
    if key[0] is not None and usable.any():
        watermark_ms = state.getCurrentWatermarkMs()
        stored = json.loads(state.get[0]) if state.exists else {}
        histories: dict[str, CardHistory] = {}
        # Plain Python lists: reading a DataFrame cell by cell costs far more.
        # A rejected row has no event time (NaT), and usable leaves it out.
        times = rows["event_time"].to_numpy(dtype="datetime64[ms]").astype("int64").tolist()
        amounts = rows["amount"].tolist()
        present = (rows["channel"] == "card_present").tolist()
        latitudes = rows["merchant_latitude"].tolist()
        longitudes = rows["merchant_longitude"].tolist()
        transaction_ids = rows["transaction_id"].tolist()
        cards = rows["card_id"].tolist()
        # Event time, then the Kafka position: rows arrive in no fixed order, and
        # payments at the same time must count in the same order on every run.
        positions = list(zip(rows["kafka_partition"].tolist(), rows["kafka_offset"].tolist(),
                             strict=True))
        seen: set[str] = set()
        for i in sorted(np.flatnonzero(usable).tolist(), key=lambda i: (times[i], positions[i])):
            if times[i] < watermark_ms:
                late[i] = True
                continue
            if transaction_ids[i] in seen:
                continue  # a copy of a payment in this batch: it loads as a duplicate
            seen.add(transaction_ids[i])
            history = histories.get(cards[i])
            if history is None:
                history = CardHistory(stored.get(cards[i]))
                histories[cards[i]] = history
            values = history.add(times[i], float(amounts[i]), present[i],
                                 _nullable(latitudes[i]), _nullable(longitudes[i]))
            for column, value in zip(numbers, values, strict=True):
                if value is not None:
                    column[i] = value
        stored.update((card, history.as_state()) for card, history in histories.items())
        state.update((json.dumps(stored, separators=(",", ":")),))

    names = [field.name for field in CARD_FEATURES.fields]
    added = pd.DataFrame(dict(zip(names, [*numbers, late], strict=True)), index=rows.index)
    # One concat costs about a third of adding the six columns one by one.
    yield pd.concat([rows, added], axis=1)


def with_card_features(transactions: DataFrame) -> DataFrame:
    """Add CARD_FEATURES to a stream of validated transactions with merchant locations.

    transactions needs event_time, reject_reason, card_id, amount, channel,
    merchant_latitude and merchant_longitude.
    """
    # A rejected message's event time may be years ahead, which would move the
    # watermark past every real payment, or outside the range of pandas
    # timestamps. Rejected rows need no time, so they lose it here.
    checked = transactions.withColumns({
        "event_time": F.when(F.col("reject_reason").isNull(), F.col("event_time")),
        # xxhash64 of a null is its seed, so a row without a card needs the when().
        "card_bucket": F.when(
            F.col("card_id").isNotNull(), F.pmod(F.xxhash64("card_id"), F.lit(CARD_BUCKETS))
        ),
    })
    output = StructType(checked.schema.fields + CARD_FEATURES.fields)
    features = (
        checked.withWatermark("event_time", WATERMARK_DELAY)
        .groupBy("card_bucket")
        .applyInPandasWithState(
            update_cards, output, CARD_STATE, "append", GroupStateTimeout.NoTimeout
        )
        .drop("card_bucket")
    )
    return features.withColumns({
        "card_payments_10m": F.col("card_payments_10m").cast("int"),
        "card_prior_payments": F.col("card_prior_payments").cast("int"),
        "card_mean_amount": F.col("card_mean_amount").cast("decimal(12,2)"),
        "travel_km": F.col("travel_km").cast("decimal(9,1)"),
        "travel_kmh": F.col("travel_kmh").cast("decimal(10,1)"),
    })


def with_merchant_locations(transactions: DataFrame, merchants: DataFrame) -> DataFrame:
    """Left-join merchant_latitude and merchant_longitude from a (merchant_id, lat, lon) frame."""
    located = merchants.select(
        "merchant_id",
        F.col("latitude").cast("double").alias("merchant_latitude"),
        F.col("longitude").cast("double").alias("merchant_longitude"),
    )
    return transactions.join(F.broadcast(located), "merchant_id", "left")


def with_terminal_feedback(transactions: DataFrame, frauds: DataFrame) -> DataFrame:
    """Add terminal_confirmed_frauds: frauds at the terminal confirmed when the payment happened.

    frauds has merchant_id and fraud_times, an array of the times of that
    terminal's frauds, one row per merchant. A fraud counts for a payment at
    time t when it happened in (t - FEEDBACK_DELAY - FEEDBACK_WINDOW, t - FEEDBACK_DELAY].
    """
    delay = F.expr(f"INTERVAL {int(FEEDBACK_DELAY.total_seconds())} SECONDS")
    span = F.expr(f"INTERVAL {int((FEEDBACK_DELAY + FEEDBACK_WINDOW).total_seconds())} SECONDS")
    # A broadcast join on merchant_id and a filter over each payment's array
    # need no shuffle, which a join per fraud followed by a count would.
    located = transactions.join(F.broadcast(frauds), "merchant_id", "left")
    confirmed = F.filter(
        "fraud_times",
        lambda fraud_time: (fraud_time <= F.col("event_time") - delay)
        & (fraud_time > F.col("event_time") - span),
    )
    count = F.when(F.col("fraud_times").isNull(), F.lit(0)).otherwise(F.size(confirmed))
    return located.withColumn(
        "terminal_confirmed_frauds",
        F.when(F.col("reject_reason").isNull(), count.cast("int")),
    ).drop("fraud_times")
