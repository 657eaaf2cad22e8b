"""The fraud scenarios that the simulator plants, as numpy operations on transaction columns.

S1 to S3 follow the simulated data set of the fraud detection handbook by Le
Borgne, Siblini, Lebichot and Bontempi (see labkit.simulator). S4 and S5 are new:
each needs the state of one card across transactions, so only a stateful rule
can find them.

Scenario codes: 0 is an honest transaction and code i is SCENARIOS[i - 1].
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from labkit.simulator import SimulatorConfig

SCENARIOS = (
    "s1_high_amount",
    "s2_compromised_terminal",
    "s3_compromised_customer",
    "s4_card_testing",
    "s5_impossible_travel",
)
HONEST, S1, S2, S3, S4, S5 = range(6)
SECONDS_PER_DAY = 86_400


@dataclass
class TransactionColumns:
    """Transactions as parallel numpy arrays.

    Each customer has one card, so customer also identifies the card.
    """

    seconds: np.ndarray  # int64 seconds since the simulation's start
    customer: np.ndarray  # int64 customer number
    terminal: np.ndarray  # int64 terminal (merchant) number
    cents: np.ndarray  # int64 amount in cents
    ecommerce: np.ndarray  # bool: card not present
    scenario: np.ndarray  # int8 scenario code

    def __len__(self) -> int:
        return len(self.seconds)

    def take(self, index: np.ndarray) -> TransactionColumns:
        """Return the rows at index (an integer array or a boolean mask)."""
        return TransactionColumns(*(getattr(self, f.name)[index] for f in fields(self)))

    @staticmethod
    def concat(parts: list[TransactionColumns]) -> TransactionColumns:
        """Stack the rows of parts, in order."""
        return TransactionColumns(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(parts[0]))
        )


def draw_amounts(rng: np.random.Generator, means: np.ndarray, sds: np.ndarray) -> np.ndarray:
    """Draw amounts in cents: normal, a negative draw redrawn uniformly in 0 to twice the mean.

    A draw that rounds to zero becomes one cent, because the lab's schema needs amounts
    above zero.
    """
    amounts = rng.normal(means, sds)
    negative = amounts < 0
    amounts[negative] = rng.uniform(0, 2 * means[negative])
    return np.maximum(np.rint(amounts * 100).astype(np.int64), 1)


def label_high_amounts(columns: TransactionColumns, config: SimulatorConfig) -> None:
    """S1: label every transaction above config.high_amount as fraud."""
    over = columns.cents > round(config.high_amount * 100)
    columns.scenario[over] = S1


def label_compromised_terminals(
    rng: np.random.Generator, columns: TransactionColumns, config: SimulatorConfig
) -> None:
    """S2: compromise terminals each day and label all their transactions for a period.

    A terminal compromised on day d makes every transaction on days d to
    d + terminal_fraud_days - 1 fraud.
    """
    days = config.days
    compromised = np.zeros((config.terminals, days), dtype=bool)
    for day in range(days):
        chosen = rng.choice(config.terminals, config.compromised_terminals_per_day, replace=False)
        compromised[chosen, day : day + config.terminal_fraud_days] = True
    hit = compromised[columns.terminal, columns.seconds // SECONDS_PER_DAY]
    columns.scenario[hit] = S2


def label_compromised_customers(
    rng: np.random.Generator, columns: TransactionColumns, config: SimulatorConfig
) -> None:
    """S3: compromise customers each day and make a share of their next payments fraud.

    For a customer compromised on day d, a third (rounded down, by default) of
    the customer's transactions on days d to d + customer_fraud_days - 1 are
    chosen at random. Their amounts are multiplied by compromised_amount_factor.
    A transaction chosen by two overlapping compromises is multiplied once.
    columns must be sorted by customer, then by day.
    """
    day = columns.seconds // SECONDS_PER_DAY
    bounds = np.searchsorted(columns.customer, np.arange(config.customers + 1))
    for first_day in range(config.days):
        chosen = rng.choice(config.customers, config.compromised_customers_per_day, replace=False)
        for customer in chosen:
            start, stop = bounds[customer], bounds[customer + 1]
            window = start + np.searchsorted(
                day[start:stop], [first_day, first_day + config.customer_fraud_days]
            )
            rows = np.arange(window[0], window[1])
            # Rounding first keeps a product such as 2.9999999 from becoming 2.
            count = int(round(len(rows) * config.compromised_share, 6))
            picked = rng.choice(rows, count, replace=False)
            picked = picked[columns.scenario[picked] != S3]
            columns.cents[picked] = np.rint(
                columns.cents[picked] * config.compromised_amount_factor
            ).astype(np.int64)
            columns.scenario[picked] = S3


def plant_card_testing(rng: np.random.Generator, config: SimulatorConfig) -> TransactionColumns:
    """S4: add bursts of small online payments on one card, at one merchant, within minutes.

    Each day has card_testing_per_day bursts. A burst on a random customer's card
    has card_testing_min_count to card_testing_max_count payments at one random
    terminal, amounts uniform in card_testing_min_amount to card_testing_max_amount,
    and gaps of 1 to card_testing_max_gap seconds.
    """
    parts = []
    max_gap = config.card_testing_max_gap
    for day in range(config.days):
        for _ in range(config.card_testing_per_day):
            count = int(rng.integers(config.card_testing_min_count,
                                     config.card_testing_max_count + 1))
            span = (count - 1) * max_gap
            start = day * SECONDS_PER_DAY + int(rng.integers(0, SECONDS_PER_DAY - span))
            gaps = rng.integers(1, max_gap + 1, count - 1)
            parts.append(
                TransactionColumns(
                    seconds=start + np.concatenate(([0], np.cumsum(gaps))).astype(np.int64),
                    customer=np.full(count, rng.integers(config.customers), dtype=np.int64),
                    terminal=np.full(count, rng.integers(config.terminals), dtype=np.int64),
                    cents=rng.integers(round(config.card_testing_min_amount * 100),
                                       round(config.card_testing_max_amount * 100) + 1,
                                       count),
                    ecommerce=np.ones(count, dtype=bool),
                    scenario=np.full(count, S4, dtype=np.int8),
                )
            )
    return TransactionColumns.concat(parts) if parts else _empty()


def plant_impossible_travel(
    rng: np.random.Generator,
    columns: TransactionColumns,
    config: SimulatorConfig,
    customer_xy: np.ndarray,
    terminal_xy: np.ndarray,
    customer_amounts: tuple[np.ndarray, np.ndarray],
) -> TransactionColumns:
    """S5: after a card-present payment, add one on the same card too far away to reach in time.

    Each day, impossible_travel_per_day card-present transactions of that day are
    picked at random. For each, a new card-present transaction follows at a
    terminal at least impossible_travel_min_km from the customer, between
    impossible_travel_min_gap seconds and the time that the distance minus the
    customer's radius takes at max_speed_kmh (impossible_travel_max_gap). So the
    leg from any terminal that the customer uses is at least impossible_leg_km
    long and faster than max_speed_kmh. An anchor with no terminal that far, or
    whose new transaction would fall after the last day, is skipped.
    """
    means, sds = customer_amounts
    min_units = config.impossible_travel_min_km / config.km_per_unit
    max_gap = config.impossible_travel_max_gap
    present = np.flatnonzero(~columns.ecommerce)
    day = columns.seconds[present] // SECONDS_PER_DAY
    order = np.argsort(day, kind="stable")
    bounds = np.searchsorted(day[order], np.arange(config.days + 1))

    anchors = []
    for first_day in range(config.days):
        candidates = present[order[bounds[first_day] : bounds[first_day + 1]]]
        size = min(config.impossible_travel_per_day, len(candidates))
        anchors.extend(rng.choice(candidates, size, replace=False).tolist())

    planted = []
    end = config.days * SECONDS_PER_DAY
    for anchor in anchors:
        customer = columns.customer[anchor]
        distance = np.hypot(*(terminal_xy - customer_xy[customer]).T)
        far = np.flatnonzero(distance >= min_units)
        seconds = columns.seconds[anchor] + rng.integers(config.impossible_travel_min_gap, max_gap)
        if far.size == 0 or seconds >= end:
            continue
        planted.append((seconds, customer, far[rng.integers(far.size)]))
    if not planted:
        return _empty()

    seconds, customer, terminal = (
        np.array(values, dtype=np.int64) for values in zip(*planted, strict=True)
    )
    count = len(planted)
    return TransactionColumns(
        seconds=seconds,
        customer=customer,
        terminal=terminal,
        cents=draw_amounts(rng, means[customer], sds[customer]),
        ecommerce=np.zeros(count, dtype=bool),
        scenario=np.full(count, S5, dtype=np.int8),
    )


def card_present_legs(
    columns: TransactionColumns, terminal_xy: np.ndarray, km_per_unit: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return each card-present transaction's km and seconds from the card's previous one.

    Only card-present transactions count, because an online payment's merchant
    location does not show where the card is. Both values are NaN for
    online transactions and for a card's first card-present one. columns must be
    sorted by time.
    """
    km = np.full(len(columns), np.nan)
    seconds = np.full(len(columns), np.nan)
    present = np.flatnonzero(~columns.ecommerce)
    rows = present[np.argsort(columns.customer[present], kind="stable")]
    same_card = columns.customer[rows[1:]] == columns.customer[rows[:-1]]
    previous, current = rows[:-1][same_card], rows[1:][same_card]

    step = terminal_xy[columns.terminal[current]] - terminal_xy[columns.terminal[previous]]
    km[current] = np.hypot(step[:, 0], step[:, 1]) * km_per_unit
    seconds[current] = columns.seconds[current] - columns.seconds[previous]
    return km, seconds


def impossible_travel(
    columns: TransactionColumns, terminal_xy: np.ndarray, config: SimulatorConfig
) -> np.ndarray:
    """Return which transactions end an impossible leg: long and faster than max_speed_kmh.

    A leg is impossible when it is at least config.impossible_leg_km long and
    its speed is above config.max_speed_kmh. Honest legs are never that long,
    but the leg from an S5 transaction back to the customer's next card-present
    payment can be. columns must be sorted by time.
    """
    km, seconds = card_present_legs(columns, terminal_xy, config.km_per_unit)
    with np.errstate(divide="ignore", invalid="ignore"):
        too_fast = km * 3600 > config.max_speed_kmh * seconds
    return (km >= config.impossible_leg_km) & too_fast


def _empty() -> TransactionColumns:
    integers = np.zeros(0, dtype=np.int64)
    return TransactionColumns(
        integers, integers, integers, integers, np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int8)
    )
