"""Detection quality on simulated fraud: the rules, the report and the dbt marts, all real.

A small simulation goes to a scratch topic and through the streaming query.
Each stateful rule must catch most of the scenario it was written for without
firing on much else, and the detection quality marts must agree, day by day,
with labkit.metrics computed in Python from the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import pandas as pd
import pytest

from labkit import dbt_runner, kafka_broker, metrics, recovery, report, simulator, warehouse

from .conftest import consume_all, remove_simulation_rows

CONFIG = dataclasses.replace(simulator.SMALL, days=21, seed=11)
# (rule, its scenario, least recall on that scenario, least precision of the rule)
RULE_TARGETS = [
    ("card_velocity", "s4_card_testing", 0.4, 0.9),
    ("impossible_travel", "s5_impossible_travel", 0.8, 0.8),
    ("amount_above_profile", "s3_compromised_customer", 0.3, 0.7),
    ("compromised_terminal", "s2_compromised_terminal", 0.3, 0.2),
    ("high_amount", "s1_high_amount", 1.0, 0.9),
]


@pytest.fixture(scope="module")
def simulated(lab_running):
    """CONFIG simulated into a scratch topic and streamed; its rows are removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    scratch = recovery.scratch_settings(
        lab_running, topic=f"test-detection-{suffix}", query_name=f"test_detection_{suffix}"
    )
    kafka_broker.create_topic(scratch)
    try:
        produced = simulator.produce(scratch, CONFIG)
        run = recovery.run_labkit(scratch, "stream", "--available-now",
                                  log_name="test-detection-stream")
        assert run.returncode == 0, run.log[-3000:]
        scored = warehouse.query(
            scratch, metrics.SCORED_TRANSACTIONS_SQL + " where f.kafka_topic = %s", (scratch.topic,)
        )
        scored["event_time"] = pd.to_datetime(scored["event_time"], utc=True)
        yield scratch, produced, scored
    finally:
        recovery.remove_scratch(scratch)
        remove_simulation_rows(scratch, CONFIG)


def test_every_simulated_transaction_is_scored(simulated):
    _, produced, scored = simulated

    assert len(scored) == produced.delivered
    assert scored["is_fraud"].sum() == produced.fraud_labels


@pytest.mark.parametrize(("rule", "scenario", "least_recall", "least_precision"), RULE_TARGETS,
                         ids=[target[0] for target in RULE_TARGETS])
def test_rule_catches_its_scenario(simulated, rule, scenario, least_recall, least_precision):
    _, _, scored = simulated
    fired = scored["fraud_rules"].map(lambda rules: rule in rules)
    of_scenario = scored["scenario"] == scenario

    recall = (fired & of_scenario).sum() / of_scenario.sum()
    precision = (fired & scored["is_fraud"]).sum() / fired.sum()

    assert of_scenario.sum() > 0, f"the simulation planted no {scenario}"
    assert recall >= least_recall, f"{rule} caught {recall:.2f} of {scenario}"
    assert precision >= least_precision, f"{rule} was right {precision:.2f} of the time"


def test_report_scores_the_rules_against_the_labels(simulated):
    settings, _, scored = simulated
    flagged, fraud = scored["flagged"].astype(bool), scored["is_fraud"].astype(bool)

    quality = report.detection_quality(settings)

    assert quality["precision"] == pytest.approx((flagged & fraud).sum() / flagged.sum(),
                                                 abs=0.00005)
    assert quality["recall"] == pytest.approx((flagged & fraud).sum() / fraud.sum(), abs=0.00005)
    assert 0.3 < quality["average_precision"] <= 1
    assert 0 < quality["cp_at_100"] <= 1


def test_no_fraud_label_travels_in_a_message(simulated):
    settings, produced, _ = simulated
    fields = {"transaction_id", "event_time", "customer_id", "card_id", "merchant_id",
              "amount", "currency", "channel", "mcc"}

    messages = [json.loads(record.value) for record in consume_all(settings, produced.delivered)]

    assert len(messages) == produced.delivered
    assert all(set(message) == fields for message in messages)


@pytest.fixture(scope="module")
def marts(simulated):
    """dbt build over the lab's tables, the simulated rows included."""
    settings, _, _ = simulated
    result = dbt_runner.run(settings, "build")
    assert result.exit_code == 0, result.output[-3000:]
    return settings


def test_card_precision_mart_equals_metrics(marts):
    everything = warehouse.query(marts, metrics.SCORED_TRANSACTIONS_SQL)
    everything["event_time"] = pd.to_datetime(everything["event_time"], utc=True)
    days = everything["event_time"].dt.date
    expected = metrics.card_precision_at_k(everything, 100, days.min(), days.max()).per_day

    mart = warehouse.query(
        marts,
        "select event_date, cards_ranked, fraudulent_cards, found_cards from "
        "marts.card_precision_daily where period_type = 'overall' order by event_date",
    ).set_index("event_date")

    assert list(mart.index) == list(expected.index)
    assert mart["cards_ranked"].tolist() == expected["cards"].tolist()
    assert mart["fraudulent_cards"].tolist() == expected["fraudulent_cards"].tolist()
    assert mart["found_cards"].tolist() == expected["found"].tolist()
    assert expected["found"].sum() > 0


def test_detection_quality_mart_equals_metrics(marts):
    everything = warehouse.query(marts, metrics.SCORED_TRANSACTIONS_SQL)
    everything["event_time"] = pd.to_datetime(everything["event_time"], utc=True)
    expected = metrics.quality(everything)
    by_day = metrics.quality_by_day(everything)

    overall = warehouse.query(
        marts, "select * from marts.detection_quality where period_type = 'overall'"
    ).iloc[0]
    days = warehouse.query(
        marts,
        "select first_event_date, average_precision from marts.detection_quality "
        "where period_type = 'day' order by first_event_date",
    ).set_index("first_event_date")

    # The mart rounds to 4 decimals.
    close = {"abs": 0.00005}
    assert float(overall["flag_precision"]) == pytest.approx(expected["precision"], **close)
    assert float(overall["flag_recall"]) == pytest.approx(expected["recall"], **close)
    assert float(overall["flag_f1"]) == pytest.approx(expected["f1"], **close)
    assert float(overall["average_precision"]) == pytest.approx(
        expected["average_precision"], **close
    )
    assert list(days.index) == list(by_day.index)
    assert days["average_precision"].astype(float).tolist() == pytest.approx(
        by_day["average_precision"].astype(float).tolist(), nan_ok=True, **close
    )
