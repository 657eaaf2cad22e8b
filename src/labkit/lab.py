"""Start, stop, inspect and reset the lab.

In the native lab (LAB_MODE=native, the default) labkit runs Kafka and
PostgreSQL as local processes. In the compose lab (LAB_MODE=compose) Docker runs
them, and these functions only wait for them and prepare the topic and tables.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import psycopg2

from labkit import airflow_service, jars, kafka_broker, postgres
from labkit.config import Settings
from labkit.processes import LabError, wait_until

log = logging.getLogger(__name__)

# Tables the stream and the generator fill; reset empties them all at once.
LAB_TABLES = (
    "fact_transaction",
    "fraud_label",
    "quarantine",
    "duplicate_message",
    "stream_batch",
    "dim_card",
    "dim_customer",
    "dim_merchant",
)
# Schemas dbt builds from those tables; reset drops them so no mart outlives its data.
DBT_SCHEMAS = ("staging", "marts", "analytics")


def _native(settings: Settings) -> bool:
    if settings.mode not in ("native", "compose"):
        raise LabError(f"LAB_MODE must be 'native' or 'compose', got {settings.mode!r}")
    return settings.mode == "native"


def up(settings: Settings, with_airflow: bool = False) -> None:
    """Start every service that is not running, wait until all are healthy, and prepare them.

    Safe to run again on a running lab: it starts nothing twice. with_airflow
    also starts Airflow's UI and scheduler (native lab only).
    """
    if _native(settings):
        kafka_broker.java_executable()
        postgres.server_bin_dir()
        jars.resolve(settings)
        postgres.start(settings)
        kafka_broker.start(settings)
    else:
        if with_airflow:
            raise LabError("the compose lab runs Airflow itself, on http://127.0.0.1:8080")
        _wait_for_compose_services(settings)

    postgres.apply_schema(settings)
    kafka_broker.create_topic(settings)
    if with_airflow:
        airflow_service.start(settings)
    log.info("lab is up")


def _wait_for_compose_services(settings: Settings) -> None:
    hint = "see 'docker compose -f lab/docker-compose.yml logs'"
    wait_until(lambda: postgres.is_healthy(settings), 60, "postgres", hint)
    wait_until(lambda: kafka_broker.is_healthy(settings), 60, "kafka", hint)


def down(settings: Settings) -> None:
    """Stop the native lab's services; the data stays for the next `up`."""
    if not _native(settings):
        raise LabError(
            "the compose lab is stopped with 'docker compose -f lab/docker-compose.yml down'"
        )
    airflow_service.stop(settings)
    kafka_broker.stop(settings)
    postgres.stop(settings)
    log.info("lab is down")


def status(settings: Settings) -> dict[str, Any]:
    """Return each service's name, address and health as one JSON-ready dict."""
    kafka_healthy = kafka_broker.is_healthy(settings)
    postgres_healthy = postgres.is_healthy(settings)
    services = [
        {
            "name": "kafka",
            "address": settings.kafka_bootstrap,
            "bootstrap_servers": settings.kafka_bootstrap,
            "topic": settings.topic,
            "healthy": kafka_healthy,
            "log": str(kafka_broker.log_file(settings)),
        },
        {
            "name": "postgres",
            "address": f"{settings.pg_host}:{settings.pg_port}",
            "url": settings.postgres_url,
            "healthy": postgres_healthy,
            "log": str(postgres.log_file(settings)),
        },
    ]
    healthy = kafka_healthy and postgres_healthy
    if _native(settings) and airflow_service.is_running(settings):
        airflow_healthy = airflow_service.is_healthy(settings)
        healthy = healthy and airflow_healthy
        services.append(
            {
                "name": "airflow",
                "address": f"{settings.airflow_host}:{settings.airflow_port}",
                "url": airflow_service.url(settings),
                "healthy": airflow_healthy,
                "log": str(settings.logs_dir),
            }
        )
    return {"mode": settings.mode, "healthy": healthy, "services": services}


def reset(settings: Settings) -> None:
    """Empty the topic, the lab's tables, dbt's schemas and the streaming checkpoints together.

    They are cleared as one step because a checkpoint that remembers offsets of a
    topic that no longer contains them would make the stream skip or fail.
    """
    if not (kafka_broker.is_healthy(settings) and postgres.is_healthy(settings)):
        raise LabError("reset needs a running lab; start it with 'labkit lab up'")

    kafka_broker.delete_topic(settings)
    kafka_broker.create_topic(settings)

    with psycopg2.connect(**settings.pg_connect_kwargs()) as conn:
        with conn.cursor() as cur:
            cur.execute(f"truncate {', '.join(LAB_TABLES)}")
            for schema in DBT_SCHEMAS:
                cur.execute(f"drop schema if exists {schema} cascade")
    conn.close()

    shutil.rmtree(settings.checkpoint_dir, ignore_errors=True)
    log.info("reset topic %s, %d tables and the checkpoints", settings.topic, len(LAB_TABLES))
