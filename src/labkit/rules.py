"""Fraud rules of the streaming query, written as Spark SQL conditions a learner can edit.

A rule reads the transaction's own columns (amount, channel, mcc) or the
features that labkit.features adds from state: the card's recent payments and
profile, its travel since the last card-present payment, and the frauds
already confirmed at the terminal. A rule that fires names itself in the
transaction's fraud_rules and adds its weight to the score as independent
evidence: score = 1 - (1 - w1) * (1 - w2) * ... over the rules that fired. One
rule of weight 0.9 gives 0.9; two of 0.5 give 0.75. A transaction whose score
reaches FLAG_THRESHOLD is flagged for an investigator.

The weights are about the share of each rule's hits that were fraud in the
simulated data before the handbook's test week, so a score reads roughly as the
chance that the transaction is fraud.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

FLAG_THRESHOLD = 0.5


@dataclass(frozen=True)
class Rule:
    """A named Spark SQL condition over one validated transaction, with its weight."""

    name: str
    condition: str
    weight: float
    description: str

    def column(self) -> Column:
        return F.expr(self.condition)


STATELESS_RULES: tuple[Rule, ...] = (
    Rule(
        name="high_amount",
        condition="amount > 220",
        weight=0.95,
        description="one payment above 220, far above what most customers spend",
    ),
    Rule(
        name="high_risk_merchant",
        condition="mcc in ('7995', '4829', '6051', '5967') and amount >= 50",
        weight=0.1,
        description="50 or more at gambling, money transfer, quasi-cash or direct marketing",
    ),
    Rule(
        name="large_online",
        condition="channel = 'ecommerce' and amount >= 250",
        weight=0.3,
        description="a large card-not-present payment; not enough to flag on its own",
    ),
)
STATEFUL_RULES: tuple[Rule, ...] = (
    Rule(
        name="card_velocity",
        condition="card_payments_10m >= 4",
        weight=0.9,
        description="four or more payments on one card within 10 minutes, as card testing does",
    ),
    Rule(
        name="amount_above_profile",
        condition="card_prior_payments >= 5 and amount >= 3 * card_mean_amount",
        weight=0.8,
        description="three times the card's mean amount or more, once it has 5 earlier payments",
    ),
    Rule(
        name="impossible_travel",
        condition="travel_km >= 300 and travel_kmh > 900",
        weight=0.9,
        description="300 km or more from the card's last card-present payment, faster than a jet",
    ),
    Rule(
        name="compromised_terminal",
        condition="terminal_confirmed_frauds >= 2",
        weight=0.5,
        description="two or more confirmed frauds at the terminal in the week before the delay",
    ),
)
DEFAULT_RULES: tuple[Rule, ...] = STATELESS_RULES + STATEFUL_RULES


def apply_rules(transactions: DataFrame, rules: Sequence[Rule] = DEFAULT_RULES) -> DataFrame:
    """Add fraud_rules (names of the rules that fired), fraud_score and is_flagged."""
    if not rules:
        raise ValueError("apply_rules needs at least one rule")
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"rule names must be unique, got {names}")
    for rule in rules:
        # The sink writes fraud_rules as a PostgreSQL array literal, so a name
        # stays plain: lower-case letters, digits and underscores.
        if not re.fullmatch(r"[a-z][a-z0-9_]*", rule.name):
            raise ValueError(
                f"rule name {rule.name!r} is invalid: use lower-case letters, digits and "
                "underscores, starting with a letter"
            )
        if not 0 < rule.weight <= 1:
            raise ValueError(f"rule {rule.name}: weight must be in (0, 1], got {rule.weight}")

    fired = F.array(*[F.when(rule.column(), F.lit(rule.name)) for rule in rules])
    # Each rule that fires multiplies the chance that the transaction is honest by 1 - weight.
    honest = F.lit(1.0)
    for rule in rules:
        honest = honest * F.when(rule.column(), F.lit(1.0 - rule.weight)).otherwise(F.lit(1.0))
    score = F.round(F.lit(1.0) - honest, 3).cast("decimal(4,3)")
    return (
        transactions.withColumn("fraud_rules", F.filter(fired, lambda name: name.isNotNull()))
        .withColumn("fraud_score", score)
        .withColumn("is_flagged", score >= F.lit(FLAG_THRESHOLD))
    )
