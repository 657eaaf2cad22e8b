"""Settings for every lab component, read from environment variables.

The defaults point at the native lab on 127.0.0.1. The compose lab sets the same
variables (see lab/.env.example), so notebooks and commands run unchanged on both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# The repository root: src/labkit/config.py sits two folders below it.
REPO_ROOT = Path(__file__).resolve().parents[2]
# The default of LAB_MAX_OFFSETS_PER_TRIGGER.
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 100_000


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _env_optional_int(name: str) -> int | None:
    """Return the variable as a positive integer, or None when it is unset or empty."""
    raw = _env(name, "")
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Addresses, credentials and folders of one lab."""

    mode: str = field(default_factory=lambda: _env("LAB_MODE", "native"))
    home: Path = field(default_factory=lambda: Path(_env("LAB_HOME", str(REPO_ROOT / ".lab"))))

    kafka_bootstrap: str = field(
        default_factory=lambda: _env("LAB_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    kafka_controller_port: int = field(
        default_factory=lambda: _env_int("LAB_KAFKA_CONTROLLER_PORT", 9093)
    )
    topic: str = field(default_factory=lambda: _env("LAB_TOPIC", "payments.transactions"))
    topic_partitions: int = field(default_factory=lambda: _env_int("LAB_TOPIC_PARTITIONS", 3))
    # How long the producer retries one message, for example while the broker
    # restarts, before it reports the message as failed.
    delivery_timeout_ms: int = field(
        default_factory=lambda: _env_int("LAB_DELIVERY_TIMEOUT_MS", 120_000)
    )

    # The streaming query's name: it names the checkpoint folder and the query's
    # rows in stream_batch, so a query over another topic needs a name of its own.
    query_name: str = field(default_factory=lambda: _env("LAB_QUERY_NAME", "fraud_transactions"))
    # The maximum number of Kafka offsets one micro-batch reads; None reads all available.
    # The default bounds a replay's memory: a micro-batch of 300,000 messages
    # took the lab past 3 GiB.
    max_offsets_per_trigger: int | None = field(
        default_factory=lambda: _env_optional_int("LAB_MAX_OFFSETS_PER_TRIGGER")
        or DEFAULT_MAX_OFFSETS_PER_TRIGGER
    )
    # Extra attempts of a micro-batch's PostgreSQL load after a lost connection.
    sink_retries: int = field(default_factory=lambda: _env_int("LAB_SINK_RETRIES", 5))

    pg_host: str = field(default_factory=lambda: _env("LAB_PG_HOST", "127.0.0.1"))
    pg_port: int = field(default_factory=lambda: _env_int("LAB_PG_PORT", 5432))
    pg_user: str = field(default_factory=lambda: _env("LAB_PG_USER", "lab"))
    pg_password: str = field(default_factory=lambda: _env("LAB_PG_PASSWORD", "lab"))
    pg_database: str = field(default_factory=lambda: _env("LAB_PG_DATABASE", "payments"))

    airflow_host: str = field(default_factory=lambda: _env("LAB_AIRFLOW_HOST", "127.0.0.1"))
    airflow_port: int = field(default_factory=lambda: _env_int("LAB_AIRFLOW_PORT", 8080))

    # The read-only role that dashboards log in as. It may read the dbt marts and nothing else.
    bi_user: str = field(default_factory=lambda: _env("LAB_BI_USER", "lab_bi"))
    bi_password: str = field(default_factory=lambda: _env("LAB_BI_PASSWORD", "lab_bi"))

    # Metabase's base URL, such as http://127.0.0.1:3000. Empty means that no Metabase is
    # configured, and the dashboard provisioning skips.
    metabase_url: str = field(default_factory=lambda: _env("LAB_METABASE_URL", "").rstrip("/"))
    # The admin account that the first-run setup creates and provisioning logs in with.
    metabase_user: str = field(
        default_factory=lambda: _env("LAB_METABASE_USER", "lab-admin@example.com")
    )
    metabase_password: str = field(
        default_factory=lambda: _env("LAB_METABASE_PASSWORD", "payments-lab-1")
    )
    # The PostgreSQL host as Metabase sees it, when it differs from LAB_PG_HOST: for
    # example "postgres" when labkit runs on the host and Metabase in the compose lab.
    metabase_pg_host: str = field(default_factory=lambda: _env("LAB_METABASE_PG_HOST", ""))

    @property
    def kafka_host(self) -> str:
        return self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[0]

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def checkpoint_dir(self) -> Path:
        return Path(_env("LAB_CHECKPOINT_DIR", str(self.home / "checkpoints")))

    @property
    def jars_dir(self) -> Path:
        return Path(_env("LAB_JARS_DIR", str(self.home / "jars")))

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def postgres_url(self) -> str:
        """A libpq connection URL without the password, safe to print."""
        return (
            f"postgresql://{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.pg_database}"
        )

    def pg_connect_kwargs(self) -> dict[str, object]:
        return {
            "host": self.pg_host,
            "port": self.pg_port,
            "user": self.pg_user,
            "password": self.pg_password,
            "dbname": self.pg_database,
        }

    def bi_connect_kwargs(self) -> dict[str, object]:
        """Return psycopg2 connection arguments for the read-only BI role."""
        return {**self.pg_connect_kwargs(), "user": self.bi_user, "password": self.bi_password}


def load() -> Settings:
    """Read the settings from the current environment."""
    return Settings()
