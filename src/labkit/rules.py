"""Fraud rules of the streaming query, written as Spark SQL conditions a learner can edit.

Each rule that fires adds its weight to the transaction's score (capped at 1)
and its name to the transaction's list of fired rules. A transaction whose
score reaches FLAG_THRESHOLD is flagged for an investigator.
"""

from __future__ import annotations

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


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        name="high_amount",
        condition="amount >= 500",
        weight=0.6,
        description="one payment of 500 or more, far above what most customers spend",
    ),
    Rule(
        name="high_risk_merchant",
        condition="mcc in ('7995', '4829', '6051', '5967') and amount >= 50",
        weight=0.5,
        description="50 or more at gambling, money transfer, quasi-cash or direct marketing",
    ),
    Rule(
        name="large_online",
        condition="channel = 'ecommerce' and amount >= 250",
        weight=0.3,
        description="a large card-not-present payment; not enough to flag on its own",
    ),
)


def apply_rules(transactions: DataFrame, rules: Sequence[Rule] = DEFAULT_RULES) -> DataFrame:
    """Add fraud_rules (names of the rules that fired), fraud_score and is_flagged."""
    if not rules:
        raise ValueError("apply_rules needs at least one rule")
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"rule names must be unique, got {names}")

    fired = F.array(*[F.when(rule.column(), F.lit(rule.name)) for rule in rules])
    score = sum(
        (F.when(rule.column(), F.lit(rule.weight)).otherwise(F.lit(0.0)) for rule in rules),
        start=F.lit(0.0),
    )
    capped = F.least(score, F.lit(1.0)).cast("decimal(4,3)")
    return (
        transactions.withColumn("fraud_rules", F.filter(fired, lambda name: name.isNotNull()))
        .withColumn("fraud_score", capped)
        .withColumn("is_flagged", capped >= F.lit(FLAG_THRESHOLD))
    )
