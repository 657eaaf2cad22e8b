"""Fixtures that give tests a running lab, a Spark session and loaded data."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from pyspark.sql import SparkSession

from labkit import config, kafka_broker, lab, producer, simulator, streaming
from labkit.config import Settings
from labkit.generator import GeneratorConfig

# py4j logs from object finalizers at interpreter exit, after pytest has closed
# the streams it captures; those lines would only print logging errors.
logging.getLogger("py4j").setLevel(logging.WARNING)

# The data set most tests read: small enough to stream in seconds.
LOADED_COUNT = 2000
LOADED_SEED = 7


@pytest.fixture(scope="session")
def settings() -> Settings:
    return config.load()


@pytest.fixture(scope="session")
def lab_running(settings: Settings) -> Settings:
    """The lab's services are up and healthy; the root conftest stops them after the run."""
    lab.up(settings)
    return settings


@pytest.fixture(scope="session")
def spark(lab_running: Settings) -> Iterator[SparkSession]:
    session = streaming.spark_session(lab_running, app_name="labkit-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def loaded_lab(lab_running: Settings, spark: SparkSession) -> Settings:
    """An emptied lab into which LOADED_COUNT generated transactions were produced and streamed."""
    lab.reset(lab_running)
    result = producer.produce_generated(
        lab_running, count=LOADED_COUNT, seed=LOADED_SEED, config=GeneratorConfig()
    )
    assert result.delivered == LOADED_COUNT
    query = streaming.start(spark, lab_running, available_now=True)
    query.awaitTermination()
    assert query.exception() is None
    return lab_running


@pytest.fixture
def pg(loaded_lab: Settings) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection to the loaded lab's database."""
    conn = psycopg2.connect(**loaded_lab.pg_connect_kwargs())
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def scratch_topic(lab_running: Settings, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings whose topic is a new, empty topic of its own, deleted afterwards."""
    name = f"test-{request.node.module.__name__.rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(lab_running, topic=name.replace("_", "-"))
    kafka_broker.create_topic(settings)
    yield settings
    kafka_broker.delete_topic(settings)


def consume_all(settings: Settings, expected: int) -> list[ConsumerRecord]:
    """Read the topic from its first offset until expected records arrived or 5 s passed."""
    consumer = KafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    records = []
    try:
        for record in consumer:
            records.append(record)
            if len(records) >= expected:
                break
    finally:
        consumer.close()
    return records


def remove_simulation_rows(settings: Settings, simulation_config: simulator.SimulatorConfig) -> None:
    """Delete the fraud labels and dimension rows that simulator.produce wrote for a config.

    Dimension rows that a loaded fact still references stay, because a lab that
    streamed the same simulation shares these ids.
    """
    simulation = simulator.simulate(simulation_config)
    transaction_ids = [label[0] for label in simulation.labels()]
    conn = psycopg2.connect(**settings.pg_connect_kwargs())
    try:
        with conn, conn.cursor() as cur:
            cur.execute("delete from fraud_label where transaction_id = any(%s)",
                        (transaction_ids,))
            for table, key, ids in (
                ("dim_card", "card_id", simulation.card_ids),
                ("dim_customer", "customer_id", simulation.customer_ids),
                ("dim_merchant", "merchant_id", simulation.merchant_ids),
            ):
                cur.execute(
                    f"delete from {table} as d where d.{key} = any(%s) and not exists "
                    f"(select 1 from fact_transaction as f where f.{key} = d.{key})",
                    (ids,),
                )
    finally:
        conn.close()
