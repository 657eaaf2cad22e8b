"""The generator: deterministic worlds and transactions, well-formed messages, known fraud."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from labkit.currencies import ISO_4217_CODES
from labkit.generator import (
    HIGH_RISK_MCCS,
    GeneratorConfig,
    build_world,
    generate_transactions,
)

CONFIG = GeneratorConfig(customers=200, merchants=80)


@pytest.fixture(scope="module")
def world():
    return build_world(CONFIG)


@pytest.fixture(scope="module")
def transactions(world):
    return list(generate_transactions(world, CONFIG, count=20_000, seed=11))


def test_same_seed_gives_same_world():
    first, second = build_world(CONFIG), build_world(CONFIG)

    assert first == second
    assert len(first.customers) == 200
    assert len(first.merchants) == 80
    assert 200 <= len(first.cards) <= 400


def test_other_world_seed_gives_other_people():
    other = build_world(GeneratorConfig(customers=200, merchants=80, world_seed=43))

    assert other.customers[0].full_name != build_world(CONFIG).customers[0].full_name


def test_same_seed_gives_same_transactions(world, transactions):
    again = list(generate_transactions(world, CONFIG, count=20_000, seed=11))
    other = list(generate_transactions(world, CONFIG, count=100, seed=12))

    assert again == transactions
    assert other[0].transaction_id != transactions[0].transaction_id


def test_transaction_ids_are_unique(transactions):
    assert len({t.transaction_id for t in transactions}) == len(transactions)


def test_transactions_are_in_event_time_order_within_window(transactions):
    times = [t.event_time for t in transactions]

    assert times == sorted(times)
    assert times[0] >= datetime(2018, 4, 1, tzinfo=UTC)
    assert times[-1] < datetime(2018, 4, 8, tzinfo=UTC)


def test_message_fields_are_well_formed(transactions):
    message = transactions[0].to_message()

    assert set(message) == {
        "transaction_id", "event_time", "customer_id", "card_id", "merchant_id",
        "amount", "currency", "channel", "mcc",
    }
    assert re.fullmatch(r"\d+\.\d{2}", message["amount"])
    assert message["event_time"].endswith("+00:00")
    assert datetime.fromisoformat(message["event_time"]) == transactions[0].event_time
    assert message["currency"] in ISO_4217_CODES
    assert json.loads(json.dumps(message)) == message


def test_message_never_carries_the_fraud_label(transactions):
    fraud = next(t for t in transactions if t.fraud_scenario)

    assert "fraud_scenario" not in fraud.to_message()
    assert fraud.fraud_scenario not in json.dumps(fraud.to_message())


def test_amounts_are_positive_cents(transactions):
    amounts = [t.amount for t in transactions]

    assert min(amounts) >= Decimal("0.01")
    assert all(a == a.quantize(Decimal("0.01")) for a in amounts)


def test_cards_belong_to_their_customer(world, transactions):
    owner = {card.card_id: card.customer_id for card in world.cards}

    assert all(owner[t.card_id] == t.customer_id for t in transactions)


def test_fraud_rates_match_the_config(transactions):
    scenarios = Counter(t.fraud_scenario for t in transactions)
    count = len(transactions)

    # 0.4% each of 20,000 is 80; a seeded draw lands within a few dozen.
    assert 50 <= scenarios["high_amount"] <= 110
    assert 50 <= scenarios["risky_merchant"] <= 110
    assert scenarios[None] == count - scenarios["high_amount"] - scenarios["risky_merchant"]


def test_fraud_scenarios_have_their_shape(world, transactions):
    mcc = {merchant.merchant_id: merchant.mcc for merchant in world.merchants}
    risky = [t for t in transactions if t.fraud_scenario == "risky_merchant"]
    large = [t for t in transactions if t.fraud_scenario == "high_amount"]

    assert all(mcc[t.merchant_id] in HIGH_RISK_MCCS for t in risky)
    assert all(t.amount >= Decimal("450") for t in large)
    assert all(t.channel == "ecommerce" for t in large + risky)


def test_dimension_rows_match_the_schema_columns(world):
    from labkit.warehouse import DIMENSION_COLUMNS

    assert set(world.rows("customers")[0]) == set(DIMENSION_COLUMNS["dim_customer"])
    assert set(world.rows("cards")[0]) == set(DIMENSION_COLUMNS["dim_card"])
    assert set(world.rows("merchants")[0]) == set(DIMENSION_COLUMNS["dim_merchant"])
