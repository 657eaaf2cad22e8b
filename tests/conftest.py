"""Fixtures that give tests a running lab, a Spark session and loaded data."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg2
import pytest
from pyspark.sql import SparkSession

from labkit import config, lab, producer, streaming
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
