"""A seeded card transaction simulator whose fraud is planted by known scenarios.

It follows the simulated data set described in "Reproducible Machine Learning
for Credit Card Fraud Detection - Practical Handbook" by Le Borgne, Siblini,
Lebichot and Bontempi (chapter "Getting started"). Customers and terminals lie
uniformly on a square plane, and each customer pays at the terminals within a
radius. Every day each customer makes a Poisson number of payments around
midday, with amounts normal around the customer's mean. Fraud comes from three
scenarios of the handbook and two that need per-card state (fraud_scenarios).
A transaction that several scenarios make fraud carries the label of the
latest one: S1, then S2, then S3 overwrite each other. S4 and S5 add
transactions of their own, and those keep their label.

Terminals become the lab's merchants and each customer has one card, so the
output loads into the lab like the generator's: dimension rows for
warehouse.upsert_dimension, generator.Transaction objects for the producer, and
fraud labels for the fraud_label table only.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from functools import cached_property

import numpy as np
import pandas as pd

from labkit import producer, simulated_dimensions
from labkit.config import Settings
from labkit.fraud_scenarios import (
    HONEST,
    S5,
    SCENARIOS,
    SECONDS_PER_DAY,
    TransactionColumns,
    draw_amounts,
    impossible_travel,
    label_compromised_customers,
    label_compromised_terminals,
    label_high_amounts,
    plant_card_testing,
    plant_impossible_travel,
)
from labkit.generator import CURRENCY_BY_COUNTRY, Transaction

# Figures of the handbook's data set made with the defaults (S1 to S3 only).
HANDBOOK_FIGURES = {
    "transactions": 1_754_155,
    "frauds": 14_681,
    "s1_high_amount": 978,
    "s2_compromised_terminal": 9_099,
    "s3_compromised_customer": 4_604,
}


@dataclass(frozen=True)
class SimulatorConfig:
    """Parameters of one simulation.

    The defaults for the world, the days and S1 to S3 are the handbook's. S4 and
    S5 are additions, and setting their per-day counts to 0 leaves them out.
    Lengths are in plane units unless the name says km, durations in days or
    seconds as named, and amounts in currency units.
    """

    customers: int = 5_000
    terminals: int = 10_000
    days: int = 183
    start: datetime = datetime(2018, 4, 1, tzinfo=UTC)
    seed: int = 0
    plane_size: float = 100.0
    radius: float = 5.0
    min_mean_amount: float = 5.0
    max_mean_amount: float = 100.0
    max_mean_per_day: float = 4.0
    # A payment's time of day is drawn from a normal distribution, and draws
    # outside the day are dropped.
    time_mean_seconds: float = 43_200.0
    time_sd_seconds: float = 20_000.0
    ecommerce_share: float = 0.3
    # S1
    high_amount: float = 220.0
    # S2
    compromised_terminals_per_day: int = 2
    terminal_fraud_days: int = 28
    # S3
    compromised_customers_per_day: int = 3
    customer_fraud_days: int = 14
    compromised_share: float = 1 / 3
    compromised_amount_factor: float = 5.0
    # S4: set card_testing_per_day to 0 to leave it out.
    card_testing_per_day: int = 2
    card_testing_min_count: int = 5
    card_testing_max_count: int = 10
    card_testing_min_amount: float = 0.50
    card_testing_max_amount: float = 3.00
    card_testing_max_gap: int = 40
    # S5: set impossible_travel_per_day to 0 to leave it out. With 10 km per
    # unit the default plane is 1,000 km wide; 900 km/h is an airliner's speed.
    impossible_travel_per_day: int = 3
    km_per_unit: float = 10.0
    max_speed_kmh: float = 900.0
    impossible_travel_min_km: float = 300.0
    impossible_travel_min_gap: int = 60

    def __post_init__(self) -> None:
        for name in ("customers", "terminals", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.start.tzinfo is None or self.start.utcoffset() != timedelta(0):
            raise ValueError(f"start must be timezone-aware UTC, got {self.start!r}")
        if self.start.timetz() != time(0, tzinfo=self.start.tzinfo):
            raise ValueError(f"start must be at midnight UTC, got {self.start.isoformat()}")
        if self.compromised_terminals_per_day > self.terminals:
            raise ValueError("compromised_terminals_per_day must not exceed terminals")
        if self.compromised_customers_per_day > self.customers:
            raise ValueError("compromised_customers_per_day must not exceed customers")
        if not 1 <= self.card_testing_min_count <= self.card_testing_max_count:
            raise ValueError(
                "card testing counts must satisfy 1 <= min_count <= max_count, got "
                f"{self.card_testing_min_count} and {self.card_testing_max_count}"
            )
        if self.card_testing_max_count * self.card_testing_max_gap >= SECONDS_PER_DAY:
            raise ValueError(
                f"a card testing burst of {self.card_testing_max_count} payments "
                f"{self.card_testing_max_gap} s apart must fit in one day; lower either"
            )
        if self.impossible_leg_km <= 2 * self.radius * self.km_per_unit:
            raise ValueError(
                "impossible_travel_min_km must exceed 3 * radius * km_per_unit, so that "
                "an S5 leg is longer than any honest one"
            )
        if self.impossible_travel_max_gap <= self.impossible_travel_min_gap:
            raise ValueError(
                f"impossible_travel_min_km ({self.impossible_travel_min_km}) leaves no time "
                f"window above impossible_travel_min_gap; raise the distance or lower the gap"
            )

    @property
    def impossible_leg_km(self) -> float:
        """The shortest leg in km to an S5 transaction, longer than any honest leg (2 * radius)."""
        return self.impossible_travel_min_km - self.radius * self.km_per_unit

    @property
    def impossible_travel_max_gap(self) -> int:
        """Seconds within which an S5 transaction follows its anchor, so its speed is too high."""
        return int(self.impossible_leg_km / self.max_speed_kmh * 3600)


@dataclass(frozen=True)
class Simulation:
    """The simulated customers, terminals and time-ordered transactions of one config."""

    config: SimulatorConfig
    # Per customer: location columns, mean_amount, sd_amount, mean_per_day, terminal_count.
    customers: pd.DataFrame
    # Per terminal: location columns, mcc, currency.
    terminals: pd.DataFrame
    columns: TransactionColumns
    # Two random 64-bit halves of each transaction's UUID.
    id_bits: np.ndarray

    @cached_property
    def customer_ids(self) -> list[str]:
        return [f"sim_cus_{number:05d}" for number in range(self.config.customers)]

    @cached_property
    def card_ids(self) -> list[str]:
        return [f"sim_card_{number:05d}" for number in range(self.config.customers)]

    @cached_property
    def merchant_ids(self) -> list[str]:
        return [f"sim_term_{number:05d}" for number in range(self.config.terminals)]

    def transaction_id(self, row: int) -> str:
        """Return the UUID of the transaction at row."""
        high, low = (int(bits) for bits in self.id_bits[row])
        return str(uuid.UUID(int=high << 64 | low, version=4))

    def scenario_counts(self) -> dict[str, int]:
        """Return the number of transactions of each scenario, by scenario name."""
        counts = np.bincount(self.columns.scenario, minlength=len(SCENARIOS) + 1)
        return {name: int(counts[code]) for code, name in enumerate(SCENARIOS, start=1)}

    def labels(self) -> list[tuple[str, str]]:
        """Return (transaction_id, scenario) of every fraud, for warehouse.insert_labels."""
        rows = np.flatnonzero(self.columns.scenario != HONEST)
        return [(self.transaction_id(row), SCENARIOS[self.columns.scenario[row] - 1])
                for row in rows]

    def rows(self, kind: str) -> list[dict[str, object]]:
        """Return the customers, cards or merchants as dicts of their dimension columns."""
        if kind == "merchants":
            return simulated_dimensions.merchant_rows(
                self.terminals, self.merchant_ids, self.config.seed
            )
        if kind not in ("customers", "cards"):
            raise ValueError(f"kind must be customers, cards or merchants, got {kind!r}")
        customers, cards = self._customer_and_card_rows
        return customers if kind == "customers" else cards

    @cached_property
    def _customer_and_card_rows(
        self,
    ) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        # Both come from one Faker sequence, so they are made, and cached, together.
        return simulated_dimensions.customer_and_card_rows(
            self.customers, self.customer_ids, self.card_ids, self.config.seed,
            self.config.start.date(),
        )

    def iter_transactions(self, chunk_size: int = 50_000) -> Iterator[Transaction]:
        """Yield the transactions in event-time order, converting chunk_size rows at a time."""
        mccs = self.terminals["mcc"].tolist()
        currencies = self.terminals["currency"].tolist()
        names = (None, *SCENARIOS)
        columns = self.columns
        for start in range(0, len(columns), chunk_size):
            stop = min(start + chunk_size, len(columns))
            part = slice(start, stop)
            values = zip(
                range(start, stop),
                columns.seconds[part].tolist(),
                columns.customer[part].tolist(),
                columns.terminal[part].tolist(),
                columns.cents[part].tolist(),
                columns.ecommerce[part].tolist(),
                columns.scenario[part].tolist(),
                strict=True,
            )
            for row, seconds, customer, terminal, cents, ecommerce, code in values:
                yield Transaction(
                    transaction_id=self.transaction_id(row),
                    event_time=self.config.start + timedelta(seconds=seconds),
                    customer_id=self.customer_ids[customer],
                    card_id=self.card_ids[customer],
                    merchant_id=self.merchant_ids[terminal],
                    amount=Decimal(cents).scaleb(-2),
                    currency=currencies[terminal],
                    channel="ecommerce" if ecommerce else "card_present",
                    mcc=mccs[terminal],
                    fraud_scenario=names[code],
                )

    def to_frame(self) -> pd.DataFrame:
        """Return the transactions as a DataFrame with their labels (is_fraud, scenario).

        Ids are categoricals, but the transaction ids are strings: the default
        run's frame takes about 450 MB.
        """
        columns = self.columns
        scenario = pd.Categorical.from_codes(columns.scenario.astype(np.int64) - 1, SCENARIOS)
        return pd.DataFrame({
            "transaction_id": [self.transaction_id(row) for row in range(len(columns))],
            "event_time": pd.Timestamp(self.config.start)
            + pd.to_timedelta(columns.seconds, unit="s"),
            "customer_id": pd.Categorical.from_codes(columns.customer, self.customer_ids),
            "card_id": pd.Categorical.from_codes(columns.customer, self.card_ids),
            "merchant_id": pd.Categorical.from_codes(columns.terminal, self.merchant_ids),
            "amount": columns.cents / 100,
            "channel": np.where(columns.ecommerce, "ecommerce", "card_present"),
            "mcc": self.terminals["mcc"].to_numpy()[columns.terminal],
            "is_fraud": columns.scenario != HONEST,
            "scenario": scenario,
        })


# A tenth of the handbook's customers and terminals on a plane a quarter of the
# size, so each customer still reaches about 100 terminals: about 1,100
# transactions a day. Notebooks and tests use it with a few weeks of days.
SMALL = SimulatorConfig(customers=500, terminals=1000, plane_size=50.0)


def simulate(config: SimulatorConfig | None = None) -> Simulation:
    """Simulate the customers, terminals and transactions of config (the defaults if None)."""
    config = config or SimulatorConfig()
    world, honest, s2, s3, s4, s5 = (
        np.random.default_rng(stream) for stream in np.random.SeedSequence(config.seed).spawn(6)
    )
    size = config.plane_size
    customer_xy = world.uniform(0, size, (config.customers, 2))
    means = world.uniform(config.min_mean_amount, config.max_mean_amount, config.customers)
    per_day = world.uniform(0, config.max_mean_per_day, config.customers)
    terminal_xy = world.uniform(0, size, (config.terminals, 2))
    mccs = simulated_dimensions.draw_mccs(world, config.terminals)
    offsets, reachable = _terminals_in_reach(customer_xy, terminal_xy, config.radius)

    columns = _honest_transactions(honest, config, per_day, (means, means / 2), offsets,
                                   reachable)
    label_high_amounts(columns, config)
    label_compromised_terminals(s2, columns, config)
    label_compromised_customers(s3, columns, config)
    card_testing = plant_card_testing(s4, config)
    travel = plant_impossible_travel(s5, columns, config, customer_xy, terminal_xy,
                                     (means, means / 2))
    columns = TransactionColumns.concat([columns, card_testing, travel])
    # A stable sort keeps a planted transaction after an honest one of the same second.
    columns = columns.take(np.argsort(columns.seconds, kind="stable"))
    columns = _drop_possible_travel(columns, terminal_xy, config)

    customers = simulated_dimensions.locate(customer_xy, size, config.km_per_unit)
    customers["mean_amount"] = means
    customers["sd_amount"] = means / 2
    customers["mean_per_day"] = per_day
    customers["terminal_count"] = np.diff(offsets)
    terminals = simulated_dimensions.locate(terminal_xy, size, config.km_per_unit)
    terminals["mcc"] = mccs
    terminals["currency"] = terminals["country_code"].map(CURRENCY_BY_COUNTRY)
    return Simulation(config, customers, terminals, columns, _id_bits(config, len(columns)))


def produce(settings: Settings, config: SimulatorConfig | None = None,
            rate: float | None = None) -> producer.ProduceResult:
    """Simulate config, write its dimensions and fraud labels to Postgres, then send it to Kafka.

    The labels go to Postgres before any message is sent, so the ground truth is
    complete for every transaction the stream can see. rate, when given, paces
    sending to that many messages per second.
    """
    simulation = simulate(config)
    dimensions = {
        "dim_customer": simulation.rows("customers"),
        "dim_card": simulation.rows("cards"),
        "dim_merchant": simulation.rows("merchants"),
    }
    return producer.produce_transactions(
        settings,
        dimensions,
        simulation.labels(),
        simulation.iter_transactions(),
        total=len(simulation.columns),
        rate=rate,
    )


def _terminals_in_reach(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Return each customer's terminals within radius, as CSR offsets and terminal numbers."""
    counts, reachable = [], []
    for start in range(0, len(customer_xy), chunk):
        block = customer_xy[start : start + chunk]
        squared = (block[:, :1] - terminal_xy[:, 0]) ** 2 + (block[:, 1:] - terminal_xy[:, 1]) ** 2
        rows, terminals = np.nonzero(squared < radius**2)
        counts.append(np.bincount(rows, minlength=len(block)))
        reachable.append(terminals)
    offsets = np.concatenate(([0], np.cumsum(np.concatenate(counts))))
    return offsets, np.concatenate(reachable).astype(np.int64)


def _honest_transactions(
    rng: np.random.Generator,
    config: SimulatorConfig,
    per_day: np.ndarray,
    amounts: tuple[np.ndarray, np.ndarray],
    offsets: np.ndarray,
    reachable: np.ndarray,
) -> TransactionColumns:
    """Draw every customer's daily payments, sorted by customer, then by day."""
    counts = rng.poisson(per_day[:, None], size=(config.customers, config.days))
    customer = np.repeat(np.arange(config.customers), counts.sum(axis=1))
    day = np.repeat(np.tile(np.arange(config.days), config.customers), counts.ravel())
    times = rng.normal(config.time_mean_seconds, config.time_sd_seconds, len(customer))
    means, sds = amounts
    cents = draw_amounts(rng, means[customer], sds[customer])
    ecommerce = rng.random(len(customer)) < config.ecommerce_share
    pick = rng.random(len(customer))

    terminal_count = np.diff(offsets)
    keep = (times >= 0) & (times < SECONDS_PER_DAY) & (terminal_count[customer] > 0)
    customer, day, times, cents = customer[keep], day[keep], times[keep], cents[keep]
    slot = offsets[customer] + (pick[keep] * terminal_count[customer]).astype(np.int64)
    return TransactionColumns(
        seconds=day * SECONDS_PER_DAY + times.astype(np.int64),
        customer=customer,
        terminal=reachable[slot],
        cents=cents,
        ecommerce=ecommerce[keep],
        scenario=np.zeros(len(customer), dtype=np.int8),
    )


def _drop_possible_travel(
    columns: TransactionColumns, terminal_xy: np.ndarray, config: SimulatorConfig
) -> TransactionColumns:
    """Drop S5 transactions whose leg from the card's previous card-present one is possible.

    That happens only when another S5 transaction on the same card comes between.
    """
    while True:
        possible = (columns.scenario == S5) & ~impossible_travel(columns, terminal_xy, config)
        if not possible.any():
            return columns
        columns = columns.take(~possible)


def _id_bits(config: SimulatorConfig, count: int) -> np.ndarray:
    """Draw the transaction ids' random bits from a seed derived from the whole config.

    Two configs that differ in any parameter get different ids, so the stream
    never takes a transaction of one simulation for a duplicate of another's.
    """
    digest = hashlib.sha256(repr(config).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "big"))
    return rng.integers(0, np.iinfo(np.uint64).max, (count, 2), dtype=np.uint64, endpoint=True)
