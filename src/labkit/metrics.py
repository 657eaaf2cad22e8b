"""Detection quality of fraud flags and scores, measured as the fraud detection handbook does.

The handbook is "Reproducible Machine Learning for Credit Card Fraud Detection -
Practical Handbook" by Le Borgne, Siblini, Lebichot and Bontempi. It scores a
detector per day, by transaction (precision, recall, F1, average precision) and
by card (card precision at k: how many of the k cards an investigator can check
in a day are compromised). Its test week is TEST_WEEK.

Every function is pure and takes a DataFrame of scored transactions with the
columns of SCORED_COLUMNS: transaction_id, event_time (timezone-aware), card_id,
score (float, higher is more suspicious), flagged (bool), is_fraud (bool) and
scenario (the fraud scenario, None for an honest transaction).
precision_by_rule also needs fraud_rules, a list of rule names per transaction.
A day is a calendar day in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

SCORED_COLUMNS = (
    "transaction_id", "event_time", "card_id", "score", "flagged", "is_fraud", "scenario",
)
TEST_WEEK = (date(2018, 8, 8), date(2018, 8, 14))
QUALITY_FIELDS = (
    "transactions", "frauds", "flagged", "true_positives",
    "precision", "recall", "f1", "average_precision",
)

# The lab's scored transactions with their ground truth, for warehouse.query.
SCORED_TRANSACTIONS_SQL = """
select f.transaction_id, f.event_time, f.card_id, f.fraud_score::float8 as score,
       f.is_flagged as flagged, l.transaction_id is not null as is_fraud, l.scenario,
       f.fraud_rules
from fact_transaction as f
left join fraud_label as l using (transaction_id)
"""


@dataclass(frozen=True)
class CardPrecision:
    """Card precision at k over an assessed period: the mean over days, and each day's figures."""

    k: int
    mean: float
    # Index day; columns cards (ranked), fraudulent_cards, found (in the top k), card_precision.
    per_day: pd.DataFrame


def quality(frame: pd.DataFrame) -> pd.Series:
    """Return the precision, recall and F1 of flagged and the average precision of score.

    The Series also contains the counts behind them: transactions, frauds, flagged and
    true_positives. A ratio whose denominator is zero is NaN: precision with
    nothing flagged, recall and average precision with no fraud, F1 with neither.
    """
    _check(frame)
    return pd.Series(_quality(frame), dtype=object)


def quality_by_day(frame: pd.DataFrame) -> pd.DataFrame:
    """Return quality() of each day that has transactions, indexed by day."""
    _check(frame)
    days = _days(frame)
    rows = [{"day": day, **_quality(group)} for day, group in frame.groupby(days, sort=True)]
    return pd.DataFrame(rows, columns=["day", *QUALITY_FIELDS]).set_index("day")


def average_precision(score: pd.Series | np.ndarray, is_fraud: pd.Series | np.ndarray) -> float:
    """Return the average precision of score at finding is_fraud, NaN when there is no fraud.

    Transactions are ranked by score, highest first. AP is the sum, over the
    frauds, of the precision at each fraud's rank, divided by the number of
    frauds. Tied scores form one threshold: every fraud in a tied group gets the
    precision of the whole group, as if the group were cut as one. This is the
    definition of scikit-learn's average_precision_score, and it makes the result
    independent of the order of tied rows.
    """
    scores = np.asarray(score, dtype=float)
    labels = np.asarray(is_fraud, dtype=bool)
    if np.isnan(scores).any():
        raise ValueError("score must not contain NaN")
    frauds = int(labels.sum())
    if frauds == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    group_ends = np.append(scores[1:] != scores[:-1], True)
    found = np.cumsum(labels)[group_ends]
    ranked = np.arange(1, len(scores) + 1)[group_ends]
    newly_found = np.diff(found, prepend=0)
    return float(np.sum(newly_found * found / ranked) / frauds)


def card_precision_at_k(
    frame: pd.DataFrame, k: int, start: date, end: date, delay_days: int = 0
) -> CardPrecision:
    """Return the card precision at k of each day from start to end (inclusive) and its mean.

    Each day, a card's score is the highest score of its transactions that day,
    and the card is fraudulent that day when any of them is fraud. The day's
    cards are ranked by score, highest first, with ties broken by card_id in
    ascending order. CP@k is the number of fraudulent cards in the top k divided
    by k, even when fewer than k cards are ranked. A day without transactions
    counts as 0.

    Two kinds of cards are left out of a day's ranking, as blocked cards would be:
    - cards known to be compromised: those with a fraud in the delay period, the
      delay_days days just before start;
    - cards found fraudulent in the top k on an earlier day of the period.
    """
    _check(frame)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if end < start:
        raise ValueError(f"end ({end}) must not be before start ({start})")
    if delay_days < 0:
        raise ValueError(f"delay_days must be zero or more, got {delay_days}")

    days = _days(frame)
    in_delay = (days >= start - timedelta(days=delay_days)) & (days < start)
    left_out = set(frame.loc[in_delay & frame["is_fraud"], "card_id"].astype(str))

    in_period = (days >= start) & (days <= end)
    cards = (
        frame.loc[in_period, ["card_id", "score", "is_fraud"]]
        .assign(day=days[in_period], card_id=lambda f: f["card_id"].astype(str))
        .groupby(["day", "card_id"], sort=True)
        .agg(score=("score", "max"), fraudulent=("is_fraud", "any"))
        .reset_index()
    )
    rows = []
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        today = cards[(cards["day"] == day) & ~cards["card_id"].isin(left_out)]
        top = today.sort_values(["score", "card_id"], ascending=[False, True]).head(k)
        found = top.loc[top["fraudulent"], "card_id"]
        left_out.update(found)
        rows.append({
            "day": day,
            "cards": len(today),
            "fraudulent_cards": int(today["fraudulent"].sum()),
            "found": len(found),
            "card_precision": len(found) / k,
        })
    per_day = pd.DataFrame(rows).set_index("day")
    return CardPrecision(k=k, mean=float(per_day["card_precision"].mean()), per_day=per_day)


def recall_by_scenario(frame: pd.DataFrame) -> pd.DataFrame:
    """Return, per fraud scenario, its frauds, how many were flagged, and the recall.

    A fraud without a scenario is counted under "unlabelled".
    """
    _check(frame)
    frauds = frame.loc[frame["is_fraud"]]
    scenario = frauds["scenario"].astype(object).where(frauds["scenario"].notna(), "unlabelled")
    result = frauds.groupby(scenario).agg(
        frauds=("flagged", "size"), flagged=("flagged", "sum")
    )
    result["recall"] = result["flagged"] / result["frauds"]
    result.index.name = "scenario"
    return result.sort_index()


def precision_by_rule(frame: pd.DataFrame) -> pd.DataFrame:
    """Return, per rule in fraud_rules, how often it fired, how often on fraud, and its precision.

    A rule's precision counts every transaction on which it fired, flagged or not.
    """
    _check(frame, ("fraud_rules",))
    fired = frame[["fraud_rules", "is_fraud"]].explode("fraud_rules").dropna(
        subset=["fraud_rules"]
    )
    result = fired.groupby("fraud_rules").agg(
        fired=("is_fraud", "size"), fired_on_fraud=("is_fraud", "sum")
    )
    result["precision"] = result["fired_on_fraud"] / result["fired"]
    result.index.name = "rule"
    return result.sort_index()


def _check(frame: pd.DataFrame, extra: tuple[str, ...] = ()) -> None:
    missing = [name for name in SCORED_COLUMNS + extra if name not in frame.columns]
    if missing:
        raise ValueError(f"scored transactions are missing the columns {missing}")
    if getattr(frame["event_time"].dtype, "tz", None) is None:
        raise ValueError(
            "event_time must be a timezone-aware datetime column, got "
            f"{frame['event_time'].dtype}; convert it with pd.to_datetime(..., utc=True)"
        )


def _days(frame: pd.DataFrame) -> pd.Series:
    return frame["event_time"].dt.tz_convert("UTC").dt.date


def _quality(frame: pd.DataFrame) -> dict[str, int | float]:
    flagged = frame["flagged"].astype(bool)
    fraud = frame["is_fraud"].astype(bool)
    true_positives = int((flagged & fraud).sum())
    flag_count, fraud_count = int(flagged.sum()), int(fraud.sum())
    errors = (flag_count - true_positives) + (fraud_count - true_positives)
    return {
        "transactions": len(frame),
        "frauds": fraud_count,
        "flagged": flag_count,
        "true_positives": true_positives,
        "precision": _ratio(true_positives, flag_count),
        "recall": _ratio(true_positives, fraud_count),
        "f1": _ratio(2 * true_positives, 2 * true_positives + errors),
        "average_precision": average_precision(frame["score"], fraud),
    }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")
