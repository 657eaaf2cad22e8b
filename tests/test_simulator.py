"""The simulator: the handbook's figures at a smaller scale, the scenarios' shapes, lab output.

These tests need no Kafka, Spark or Postgres.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from labkit.fraud_scenarios import S1, S2, S3, S4, S5, SECONDS_PER_DAY, impossible_travel
from labkit.generator import CURRENCY_BY_COUNTRY, MCC_WEIGHTS
from labkit.simulator import HANDBOOK_FIGURES, SimulatorConfig, simulate
from labkit.warehouse import DIMENSION_COLUMNS

# 500 customers and 1,000 terminals on a 50 x 50 plane: 31 terminals each on
# average, and enough room for S5's 300 km (30 units) journeys.
SMALL = SimulatorConfig(customers=500, terminals=1000, plane_size=50.0, days=30)
MESSAGE_FIELDS = {
    "transaction_id", "event_time", "customer_id", "card_id", "merchant_id",
    "amount", "currency", "channel", "mcc",
}


@pytest.fixture(scope="module")
def small():
    return simulate(SMALL)


@pytest.fixture(scope="module")
def transactions(small):
    return list(small.iter_transactions())


def window_days(days: int, length: int) -> int:
    """Return the compromise-days of one compromise a day for days days, each lasting length.

    A compromise on day d lasts min(length, days - d) days of the run, because
    the run ends before the late ones do.
    """
    return sum(min(length, days - day) for day in range(days))


def scaled_figures(config: SimulatorConfig) -> dict[str, float]:
    """Scale the handbook's figures (5,000 customers, 10,000 terminals, 183 days) to config."""
    default = SimulatorConfig()
    transactions = (config.customers / default.customers) * (config.days / default.days)
    # A compromised terminal gets the transactions of an average terminal:
    # customers x payments a day / terminals, whatever the radius.
    per_terminal = (config.customers / config.terminals) / (default.customers / default.terminals)
    terminal_days = window_days(config.days, config.terminal_fraud_days) / window_days(
        default.days, default.terminal_fraud_days
    )
    customer_days = window_days(config.days, config.customer_fraud_days) / window_days(
        default.days, default.customer_fraud_days
    )
    return {
        "transactions": HANDBOOK_FIGURES["transactions"] * transactions,
        "s1_high_amount": HANDBOOK_FIGURES["s1_high_amount"] * transactions,
        "s2_compromised_terminal": (
            HANDBOOK_FIGURES["s2_compromised_terminal"] * per_terminal * terminal_days
        ),
        "s3_compromised_customer": HANDBOOK_FIGURES["s3_compromised_customer"] * customer_days,
    }


# FEWER_CUSTOMERS puts a fifth of the customers and terminals on a fifth of the
# plane's area, so each customer keeps as many terminals as published.
# FEWER_DAYS keeps the full world for 40 days.
FEWER_CUSTOMERS = SimulatorConfig(customers=1000, terminals=2000, plane_size=100 * 0.2**0.5)
FEWER_DAYS = SimulatorConfig(days=40)


@pytest.mark.parametrize("config", [FEWER_CUSTOMERS, FEWER_DAYS], ids=["customers", "days"])
def test_scaled_run_matches_scaled_handbook_figures(config):
    """A smaller run lands near the handbook's figures scaled to its size.

    Transactions and S1 (a share of the transactions) scale linearly with
    customers x days. S2 and S3 do not scale with customers: each day
    compromises a fixed number of terminals (2) and customers (3). A
    compromised terminal then gets an average terminal's transactions, which
    depend on customers / terminals only, and a compromised customer makes an
    average customer's payments. So with customers and terminals both divided
    by 5, S2 and S3 keep their published counts. Over fewer days both shrink by
    the compromise-days that fit in the run (window_days): a compromise near the
    end is cut short.

    Allowed error: 5% for transactions. For S1 to S3, 10%, or 3 standard
    deviations of a Poisson count of that size (3 / sqrt(expected)) when
    larger, because a few hundred frauds vary more than that from seed to seed:
    S1 is about 200 here.
    """
    simulation = simulate(config)
    counts = simulation.scenario_counts()
    handbook_rows = simulation.columns.scenario < S4
    expected = scaled_figures(config)

    assert int(handbook_rows.sum()) == pytest.approx(expected["transactions"], rel=0.05)
    for name in ("s1_high_amount", "s2_compromised_terminal", "s3_compromised_customer"):
        tolerance = max(0.10, 3 / math.sqrt(expected[name]))
        assert counts[name] == pytest.approx(expected[name], rel=tolerance), name


def test_fewer_customers_keep_s2_and_s3_counts():
    expected = scaled_figures(FEWER_CUSTOMERS)

    assert expected["s2_compromised_terminal"] == HANDBOOK_FIGURES["s2_compromised_terminal"]
    assert expected["s3_compromised_customer"] == HANDBOOK_FIGURES["s3_compromised_customer"]
    assert expected["s1_high_amount"] == pytest.approx(978 / 5)


def test_same_config_gives_same_simulation(small):
    again = simulate(SMALL)

    assert np.array_equal(again.columns.seconds, small.columns.seconds)
    assert np.array_equal(again.columns.cents, small.columns.cents)
    assert np.array_equal(again.columns.scenario, small.columns.scenario)
    assert again.transaction_id(0) == small.transaction_id(0)
    assert again.rows("customers") == small.rows("customers")
    assert again.rows("merchants") == small.rows("merchants")


def test_other_seed_gives_other_simulation(small):
    other = simulate(dataclasses.replace(SMALL, seed=1))

    assert other.transaction_id(0) != small.transaction_id(0)
    assert not np.array_equal(other.customers["x"], small.customers["x"])
    assert other.rows("customers")[0]["full_name"] != small.rows("customers")[0]["full_name"]


def test_other_config_gives_other_ids(small):
    longer = simulate(dataclasses.replace(SMALL, days=31))

    assert longer.transaction_id(0) != small.transaction_id(0)


def test_planted_scenarios_leave_handbook_ones_unchanged(small):
    plain = simulate(
        dataclasses.replace(SMALL, card_testing_per_day=0, impossible_travel_per_day=0)
    )
    handbook_only = small.columns.take(small.columns.scenario < S4)

    assert plain.scenario_counts()["s4_card_testing"] == 0
    assert plain.scenario_counts()["s5_impossible_travel"] == 0
    assert np.array_equal(plain.columns.seconds, handbook_only.seconds)
    assert np.array_equal(plain.columns.scenario, handbook_only.scenario)


def test_transactions_are_time_ordered_in_window(transactions):
    times = [t.event_time for t in transactions]
    start = datetime(2018, 4, 1, tzinfo=UTC)

    assert times == sorted(times)
    assert times[0] >= start
    assert times[-1] < start + timedelta(days=30)
    assert all(t.utcoffset() == timedelta(0) for t in times)


def test_transaction_ids_are_unique_text(transactions):
    ids = [t.transaction_id for t in transactions]

    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, str) and len(i) == 36 for i in ids)


def test_amounts_are_positive_decimal_cents(transactions):
    amounts = [t.amount for t in transactions]

    assert all(isinstance(a, Decimal) for a in amounts)
    assert all(a.as_tuple().exponent == -2 for a in amounts)
    assert min(amounts) >= Decimal("0.01")


def test_message_has_lab_fields_and_no_label(transactions):
    fraud = next(t for t in transactions if t.fraud_scenario)
    message = fraud.to_message()

    assert set(message) == MESSAGE_FIELDS
    assert "fraud_scenario" not in message
    assert fraud.fraud_scenario not in json.dumps(message)
    assert message["event_time"].endswith("+00:00")


def test_one_card_per_customer(small, transactions):
    cards = small.rows("cards")

    assert len(cards) == SMALL.customers
    assert len({card["customer_id"] for card in cards}) == SMALL.customers
    assert all(t.card_id.removeprefix("sim_card_") == t.customer_id.removeprefix("sim_cus_")
               for t in transactions)


def test_dimension_rows_match_schema_columns(small):
    assert set(small.rows("customers")[0]) == set(DIMENSION_COLUMNS["dim_customer"])
    assert set(small.rows("cards")[0]) == set(DIMENSION_COLUMNS["dim_card"])
    assert set(small.rows("merchants")[0]) == set(DIMENSION_COLUMNS["dim_merchant"])


def test_merchants_have_category_place_and_currency(small, transactions):
    merchants = small.rows("merchants")
    country = {m["merchant_id"]: m["country_code"] for m in merchants}

    assert len(merchants) == SMALL.terminals
    assert {m["mcc"] for m in merchants} <= set(MCC_WEIGHTS)
    assert all(m["city"] and m["merchant_name"] for m in merchants)
    assert all(t.currency == CURRENCY_BY_COUNTRY[country[t.merchant_id]] for t in transactions)


def test_labels_match_transaction_scenarios(small, transactions):
    expected = {t.transaction_id: t.fraud_scenario for t in transactions if t.fraud_scenario}

    assert dict(small.labels()) == expected
    assert set(expected.values()) == {
        "s1_high_amount", "s2_compromised_terminal", "s3_compromised_customer",
        "s4_card_testing", "s5_impossible_travel",
    }


def test_no_honest_transaction_above_220(small):
    columns = small.columns

    assert not (columns.cents[columns.scenario == 0] > 22_000).any()
    assert (columns.cents[columns.scenario == S1] > 22_000).all()


def test_compromised_terminal_days_are_all_fraud(small):
    """Every transaction at a terminal on a day that it is compromised is fraud."""
    columns = small.columns
    day = columns.seconds // SECONDS_PER_DAY
    s2 = columns.scenario == S2
    compromised = set(zip(columns.terminal[s2].tolist(), day[s2].tolist(), strict=True))
    at_compromised = np.array([
        (terminal, d) in compromised
        for terminal, d in zip(columns.terminal.tolist(), day.tolist(), strict=True)
    ])

    assert s2.sum() > 0
    assert (columns.scenario[at_compromised] != 0).all()


def test_compromised_customer_amounts_are_multiplied(small):
    columns = small.columns
    s3 = columns.scenario == S3

    assert s3.sum() > 0
    assert (columns.cents[s3] % 5 == 0).all()
    assert len(np.unique(columns.customer[s3])) <= SMALL.compromised_customers_per_day * 30


def test_card_testing_bursts_have_their_shape(small):
    frame = small.to_frame()
    bursts = frame[frame["scenario"] == "s4_card_testing"].groupby(
        ["card_id", frame["event_time"].dt.date], observed=True
    )

    assert bursts.ngroups == SMALL.card_testing_per_day * SMALL.days
    for _, burst in bursts:
        span = (burst["event_time"].max() - burst["event_time"].min()).total_seconds()
        assert 5 <= len(burst) <= 10
        assert burst["amount"].between(0.50, 3.00).all()
        assert burst["merchant_id"].nunique() == 1
        assert (burst["channel"] == "ecommerce").all()
        assert span <= (len(burst) - 1) * SMALL.card_testing_max_gap


def test_impossible_travel_marks_s5_and_no_honest_leg(small):
    columns = small.columns
    terminal_xy = small.terminals[["x", "y"]].to_numpy()
    impossible = impossible_travel(columns, terminal_xy, SMALL)
    s5 = columns.scenario == S5

    assert s5.sum() > 0
    assert impossible[s5].all()
    # An honest transaction ends an impossible leg only right after an S5 one.
    returns = np.flatnonzero(impossible & ~s5)
    assert all(_previous_card_present_is_s5(columns, row) for row in returns)


def _previous_card_present_is_s5(columns, row: int) -> bool:
    earlier = np.flatnonzero(
        (columns.customer[:row] == columns.customer[row]) & ~columns.ecommerce[:row]
    )
    return columns.scenario[earlier[-1]] == S5


def test_customers_use_terminals_within_radius(small):
    columns = small.columns.take(small.columns.scenario < S4)
    customer_xy = small.customers[["x", "y"]].to_numpy()[columns.customer]
    terminal_xy = small.terminals[["x", "y"]].to_numpy()[columns.terminal]
    distance = np.hypot(*(customer_xy - terminal_xy).T)

    assert distance.max() < SMALL.radius


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start": datetime(2018, 4, 1)}, "timezone-aware UTC"),
        ({"start": datetime(2018, 4, 1, 6, tzinfo=UTC)}, "midnight"),
        ({"customers": 0}, "customers must be at least 1"),
        ({"impossible_travel_min_km": 100.0}, "must exceed 3 \\* radius"),
        ({"card_testing_min_count": 11}, "min_count <= max_count"),
    ],
)
def test_config_rejects_invalid_values(change, message):
    with pytest.raises(ValueError, match=message):
        SimulatorConfig(**change)
