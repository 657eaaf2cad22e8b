"""Seeded, deterministic customers, cards, merchants and card transactions with known fraud.

The same seeds always give the same world and the same transactions, so a
learner's numbers match the notebooks' saved outputs. Fraud labels are returned
beside each transaction and never put in the Kafka message.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from faker import Faker
from faker.providers.geo import Provider as GeoProvider

# The lab's payment platform serves Europe; each place pays in its own currency.
CURRENCY_BY_COUNTRY = {
    "DE": "EUR", "FR": "EUR", "IT": "EUR", "ES": "EUR", "NL": "EUR", "BE": "EUR",
    "PT": "EUR", "AT": "EUR", "IE": "EUR", "FI": "EUR", "GB": "GBP", "CZ": "CZK",
    "PL": "PLN", "SE": "SEK", "CH": "CHF", "DK": "DKK", "NO": "NOK",
}

# Merchant category codes (ISO 18245) with how often merchants of each kind occur.
MCC_WEIGHTS = {
    "5411": 14, "5812": 12, "5814": 10, "5541": 8, "5311": 5, "5732": 4, "5999": 6,
    "4121": 4, "4111": 5, "5912": 5, "7011": 3, "4511": 2, "5691": 6, "5942": 2,
    "5993": 2, "7832": 2, "7995": 1, "4829": 1, "6051": 1, "5967": 1,
}
# Gambling, money transfer, quasi-cash and direct marketing: where stolen cards go.
HIGH_RISK_MCCS = frozenset({"7995", "4829", "6051", "5967"})
# Electronics and department stores: what card fraudsters buy to resell.
RESALE_MCCS = frozenset({"5732", "5311"})

CARD_BRANDS = {"visa": "4", "mastercard": "5"}
CENT = Decimal("0.01")


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes, seeds and fraud rates of one generated world and its transactions."""

    customers: int = 500
    merchants: int = 200
    world_seed: int = 42
    start: datetime = datetime(2018, 4, 1, tzinfo=UTC)
    days: int = 7
    ecommerce_share: float = 0.3
    # Share of transactions that are fraud of each scenario.
    high_amount_fraud_rate: float = 0.004
    risky_merchant_fraud_rate: float = 0.004
    # Share of honest transactions that are large (a hotel, a flight), so the
    # amount rule has false positives to teach with.
    large_honest_rate: float = 0.003


@dataclass(frozen=True)
class Customer:
    customer_id: str
    full_name: str
    email: str
    city: str
    country_code: str
    latitude: float
    longitude: float
    signup_date: date
    mean_amount: float


@dataclass(frozen=True)
class Card:
    card_id: str
    customer_id: str
    card_brand: str
    masked_pan: str
    issued_on: date


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    merchant_name: str
    mcc: str
    city: str
    country_code: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Transaction:
    transaction_id: str
    event_time: datetime
    customer_id: str
    card_id: str
    merchant_id: str
    amount: Decimal
    currency: str
    channel: str
    mcc: str
    # Ground truth: None for an honest transaction, else the fraud scenario.
    fraud_scenario: str | None

    def to_message(self) -> dict[str, str]:
        """Return the Kafka message: every field but the fraud label, as JSON-ready text."""
        return {
            "transaction_id": self.transaction_id,
            "event_time": self.event_time.isoformat(),
            "customer_id": self.customer_id,
            "card_id": self.card_id,
            "merchant_id": self.merchant_id,
            "amount": f"{self.amount:.2f}",
            "currency": self.currency,
            "channel": self.channel,
            "mcc": self.mcc,
        }


@dataclass(frozen=True)
class World:
    customers: list[Customer]
    cards: list[Card]
    merchants: list[Merchant]

    def rows(self, kind: str) -> list[dict[str, object]]:
        """Return the customers, cards or merchants as dicts of their dimension columns."""
        records = {"customers": self.customers, "cards": self.cards, "merchants": self.merchants}
        rows = [asdict(record) for record in records[kind]]
        for row in rows:
            row.pop("mean_amount", None)
        return rows


def _places() -> list[tuple[str, str, str, str, str]]:
    """Return Faker's real places (lat, lon, city, country, tz) in the lab's countries."""
    return [place for place in GeoProvider.land_coords if place[3] in CURRENCY_BY_COUNTRY]


def build_world(config: GeneratorConfig) -> World:
    """Create customers with one or two cards each, and merchants, from config.world_seed."""
    rng = random.Random(config.world_seed)
    fake = Faker()
    fake.seed_instance(config.world_seed)
    places = _places()

    customers: list[Customer] = []
    cards: list[Card] = []
    for number in range(1, config.customers + 1):
        latitude, longitude, city, country, _ = rng.choice(places)
        name = fake.name()
        customer = Customer(
            customer_id=f"cus_{number:05d}",
            full_name=name,
            email=fake.email(),
            city=city,
            country_code=country,
            latitude=float(latitude),
            longitude=float(longitude),
            signup_date=fake.date_between(date(2012, 1, 1), date(2018, 3, 1)),
            mean_amount=rng.uniform(5, 100),
        )
        customers.append(customer)
        for _ in range(rng.choice((1, 1, 1, 2))):
            brand, prefix = rng.choice(list(CARD_BRANDS.items()))
            cards.append(
                Card(
                    card_id=f"card_{len(cards) + 1:06d}",
                    customer_id=customer.customer_id,
                    card_brand=brand,
                    masked_pan=f"{prefix}{rng.randrange(100, 999)} **** **** {rng.randrange(10000):04d}",
                    issued_on=fake.date_between(customer.signup_date, date(2018, 3, 31)),
                )
            )

    mccs, weights = zip(*MCC_WEIGHTS.items(), strict=True)
    merchants = []
    for number in range(1, config.merchants + 1):
        latitude, longitude, city, country, _ = rng.choice(places)
        merchants.append(
            Merchant(
                merchant_id=f"mer_{number:05d}",
                merchant_name=fake.company(),
                mcc=rng.choices(mccs, weights)[0],
                city=city,
                country_code=country,
                latitude=float(latitude),
                longitude=float(longitude),
            )
        )
    return World(customers, cards, merchants)


def _honest_amount(rng: random.Random, mean: float) -> Decimal:
    # Normal around the customer's mean with a spread of half the mean; a
    # negative draw is redrawn uniformly in 0 to twice the mean.
    amount = rng.gauss(mean, mean / 2)
    if amount <= 0:
        amount = rng.uniform(0, 2 * mean)
    return max(CENT, Decimal(str(amount)).quantize(CENT, rounding=ROUND_HALF_UP))


def _money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def generate_transactions(
    world: World, config: GeneratorConfig, count: int, seed: int
) -> Iterator[Transaction]:
    """Yield count transactions in event-time order, spread evenly over config.days.

    The seed fixes the transaction ids, so the same seed sends the same
    transactions again, and the stream deduplicates them.
    """
    rng = random.Random(seed)
    cards_by_customer: dict[str, list[Card]] = {}
    for card in world.cards:
        cards_by_customer.setdefault(card.customer_id, []).append(card)
    merchants_by_country: dict[str, list[Merchant]] = {}
    for merchant in world.merchants:
        merchants_by_country.setdefault(merchant.country_code, []).append(merchant)
    risky = [m for m in world.merchants if m.mcc in HIGH_RISK_MCCS]
    resale = [m for m in world.merchants if m.mcc in RESALE_MCCS]
    window = timedelta(days=config.days).total_seconds()

    for index in range(count):
        customer = rng.choice(world.customers)
        card = rng.choice(cards_by_customer[customer.customer_id])
        event_time = config.start + timedelta(seconds=(index + rng.random()) / count * window)
        draw = rng.random()

        if draw < config.high_amount_fraud_rate and resale:
            scenario, merchant = "high_amount", rng.choice(resale)
            amount, channel = _money(rng.uniform(450, 2500)), "ecommerce"
        elif draw < config.high_amount_fraud_rate + config.risky_merchant_fraud_rate and risky:
            scenario, merchant = "risky_merchant", rng.choice(risky)
            amount, channel = _money(rng.uniform(90, 800)), "ecommerce"
        else:
            scenario = None
            nearby = merchants_by_country.get(customer.country_code)
            merchant = rng.choice(nearby if nearby and rng.random() < 0.8 else world.merchants)
            if rng.random() < config.large_honest_rate:
                amount = _money(rng.uniform(400, 1500))
            else:
                amount = _honest_amount(rng, customer.mean_amount)
            channel = "ecommerce" if rng.random() < config.ecommerce_share else "card_present"

        yield Transaction(
            transaction_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            event_time=event_time.replace(microsecond=event_time.microsecond // 1000 * 1000),
            customer_id=customer.customer_id,
            card_id=card.card_id,
            merchant_id=merchant.merchant_id,
            amount=amount,
            currency=CURRENCY_BY_COUNTRY[merchant.country_code],
            channel=channel,
            mcc=merchant.mcc,
            fraud_scenario=scenario,
        )
