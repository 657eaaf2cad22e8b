"""Crash and restart the streaming query on a scratch topic, and send the messages to do it with.

The query runs as a separate `labkit stream` process in its own process group,
so a test or notebook 08 can SIGKILL it (the Python driver and its Spark JVM)
the way a crash or an out-of-memory kill would. Each helper here works on a
scratch topic with a query name of its own, so the main topic's rows, checkpoint
and stream_batch rows stay untouched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from labkit import checkpoints, generator, kafka_broker, streaming, warehouse
from labkit.config import Settings
from labkit.processes import LabError

log = logging.getLogger(__name__)

SCRATCH_TOPIC = "payments.recovery"
SCRATCH_QUERY = "recovery_transactions"
# The main lab's topic, which reset_scratch and remove_scratch reject.
MAIN_TOPIC = "payments.transactions"


def scratch_settings(
    settings: Settings,
    topic: str = SCRATCH_TOPIC,
    query_name: str = SCRATCH_QUERY,
    **changes: object,
) -> Settings:
    """Return settings for a scratch topic and query; changes override other fields."""
    return dataclasses.replace(settings, topic=topic, query_name=query_name, **changes)


def labkit_command() -> str:
    """Return the path of the `labkit` command of this Python environment."""
    beside = Path(sys.executable).with_name("labkit")
    if beside.exists():
        return str(beside)
    found = shutil.which("labkit")
    if found is None:
        raise LabError("the labkit command was not found; install the lab with 'make setup'")
    return found


def labkit_environment(settings: Settings, **extra: object) -> dict[str, str]:
    """Return os.environ with settings as LAB_ variables, so a `labkit` child uses the same lab.

    extra adds variables by name; a value of None removes that variable.
    """
    environment = dict(os.environ)
    environment.update({
        "LAB_MODE": settings.mode,
        "LAB_HOME": str(settings.home),
        "LAB_JARS_DIR": str(settings.jars_dir),
        "LAB_CHECKPOINT_DIR": str(settings.checkpoint_dir),
        "LAB_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LAB_KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port),
        "LAB_TOPIC": settings.topic,
        "LAB_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "LAB_DELIVERY_TIMEOUT_MS": str(settings.delivery_timeout_ms),
        "LAB_QUERY_NAME": settings.query_name,
        "LAB_SINK_RETRIES": str(settings.sink_retries),
        "LAB_PG_HOST": settings.pg_host,
        "LAB_PG_PORT": str(settings.pg_port),
        "LAB_PG_USER": settings.pg_user,
        "LAB_PG_PASSWORD": settings.pg_password,
        "LAB_PG_DATABASE": settings.pg_database,
    })
    # The children are short runs of a few batches. Compiling with the JIT's first
    # stage only (C1) starts such a Spark run faster. An explicit value is kept.
    environment.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")
    environment.pop("LAB_MAX_OFFSETS_PER_TRIGGER", None)
    if settings.max_offsets_per_trigger is not None:
        environment["LAB_MAX_OFFSETS_PER_TRIGGER"] = str(settings.max_offsets_per_trigger)
    # A crash hook inherited by accident would kill the child.
    environment.pop(streaming.FAULT_KILL_AFTER_BATCH, None)
    for name, value in extra.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = str(value)
    return environment


def log_path(settings: Settings, name: str) -> Path:
    """Return the file that receives the standard error (the log) of the child called name."""
    return settings.logs_dir / f"{name}.log"


def output_path(settings: Settings, name: str) -> Path:
    """Return the file that receives the standard output of the child called name."""
    return settings.logs_dir / f"{name}.out"


@dataclass
class LabkitProcess:
    """A `labkit` command running in a process group of its own."""

    name: str
    args: tuple[str, ...]
    process: subprocess.Popen
    started: float


@dataclass(frozen=True)
class LabkitRun:
    """Exit code, standard output and log of one `labkit` command that ran to its end."""

    returncode: int
    stdout: str
    log: str
    seconds: float


def start_labkit(settings: Settings, *args: str, log_name: str, **extra: object) -> LabkitProcess:
    """Start `labkit ARGS` in a new process group and return without waiting.

    Its standard output goes to output_path(settings, log_name) and its log to
    log_path(settings, log_name); both files are emptied first. extra sets
    environment variables as in labkit_environment.
    """
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    with (open(output_path(settings, log_name), "wb") as out,
          open(log_path(settings, log_name), "wb") as err):
        process = subprocess.Popen(
            [labkit_command(), *args],
            env=labkit_environment(settings, **extra),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    log.info("started 'labkit %s' (pid %d), logging to %s",
             " ".join(args), process.pid, log_path(settings, log_name))
    return LabkitProcess(log_name, args, process, time.monotonic())


def kill_process_group(child: LabkitProcess) -> int:
    """SIGKILL the process group of child (the command and, for a stream, Spark's JVM).

    Returns the command's exit code, -9 when the kill ended it.
    """
    try:
        os.killpg(child.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        log.info("process group %d had already exited", child.process.pid)
    returncode = child.process.wait(timeout=30)
    log.info("process group %d killed; exit code %d", child.process.pid, returncode)
    return returncode


def finish_labkit(settings: Settings, child: LabkitProcess, timeout: float = 600) -> LabkitRun:
    """Wait for child to exit and return its exit code, standard output and log.

    Raises LabError, after killing the process group, when it runs longer than
    timeout seconds.
    """
    try:
        child.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process_group(child)
        raise LabError(
            f"'labkit {' '.join(child.args)}' ran longer than {timeout:.0f} s and was killed; "
            f"see {log_path(settings, child.name)}"
        ) from None
    return LabkitRun(
        returncode=child.process.returncode,
        stdout=output_path(settings, child.name).read_text(errors="replace"),
        log=log_path(settings, child.name).read_text(errors="replace"),
        seconds=time.monotonic() - child.started,
    )


def run_labkit(
    settings: Settings, *args: str, log_name: str, timeout: float = 600, **extra: object
) -> LabkitRun:
    """Run `labkit ARGS` to its end in a new process group, as start_labkit and finish_labkit."""
    child = start_labkit(settings, *args, log_name=log_name, **extra)
    return finish_labkit(settings, child, timeout)


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    child: LabkitProcess | None = None,
    interval: float = 0.05,
) -> float:
    """Poll condition() until it returns True and return the seconds waited.

    Raises LabError when timeout seconds pass first, or when child exits first.
    """
    started = time.monotonic()
    while not condition():
        if child is not None and child.process.poll() is not None:
            raise LabError(
                f"'labkit {' '.join(child.args)}' exited with code {child.process.returncode} "
                f"before {what}"
            )
        if time.monotonic() - started > timeout:
            raise LabError(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(interval)
    return time.monotonic() - started


def checkpoint_folder(settings: Settings) -> Path:
    """Return the checkpoint folder of settings.query_name."""
    return settings.checkpoint_dir / settings.query_name


def checkpoint_status(settings: Settings) -> dict[str, int | None]:
    """Return the newest planned batch (offsets/) and committed batch (commits/) of the query."""
    folder = checkpoint_folder(settings)
    planned = checkpoints.last_planned_batch(folder)
    return {
        "planned": planned[0] if planned else None,
        "committed": checkpoints.last_committed_batch(folder),
    }


def stream_batch_ids(settings: Settings) -> list[int]:
    """Return the batch ids of settings.query_name that PostgreSQL has rows for."""
    frame = warehouse.query(
        settings,
        "select batch_id from stream_batch where query_name = %s order by batch_id",
        (settings.query_name,),
    )
    return [int(batch_id) for batch_id in frame["batch_id"]]


def transaction_messages(
    count: int,
    seed: int,
    id_prefix: str = "",
    event_time_shift: timedelta = timedelta(0),
) -> list[tuple[str, bytes, bytes]]:
    """Return count generated transactions as (transaction_id, key, value) triples for send_all.

    id_prefix is put before each transaction id, so repeated runs can send new
    transactions. event_time_shift moves every event time, for example days
    back for late events.
    """
    config = generator.GeneratorConfig()
    world = generator.build_world(config)
    messages = []
    for transaction in generator.generate_transactions(world, config, count, seed):
        transaction = dataclasses.replace(
            transaction,
            transaction_id=f"{id_prefix}{transaction.transaction_id}",
            event_time=transaction.event_time + event_time_shift,
        )
        value = json.dumps(transaction.to_message()).encode()
        messages.append((transaction.transaction_id, transaction.card_id.encode(), value))
    return messages


def ensure_dimensions(settings: Settings) -> None:
    """Write the generator's customers, cards and merchants, as `labkit produce` does."""
    world = generator.build_world(generator.GeneratorConfig())
    with warehouse.connect(settings) as conn:
        for table, kind in (("dim_customer", "customers"), ("dim_card", "cards"),
                            ("dim_merchant", "merchants")):
            warehouse.upsert_dimension(conn, table, world.rows(kind))
    conn.close()


# Labels are deleted only for the scratch topic's facts: a duplicate there may be
# a copy of a main-topic transaction, whose label must stay. Inferred dimension
# rows go only when no other fact or card refers to them.
_DELETE_SCRATCH_ROWS = """
create temporary table scratch_ids on commit drop as
select transaction_id, customer_id, card_id, merchant_id
from fact_transaction where kafka_topic = %(topic)s;

delete from fraud_label where transaction_id in (select transaction_id from scratch_ids);
delete from fact_transaction where kafka_topic = %(topic)s;
delete from duplicate_message where kafka_topic = %(topic)s;
delete from quarantine where kafka_topic = %(topic)s;
delete from stream_batch where query_name = %(query)s;

delete from dim_card as d where is_inferred
    and card_id in (select card_id from scratch_ids)
    and not exists (select 1 from fact_transaction f where f.card_id = d.card_id);
delete from dim_customer as d where is_inferred
    and customer_id in (select customer_id from scratch_ids)
    and not exists (select 1 from fact_transaction f where f.customer_id = d.customer_id)
    and not exists (select 1 from dim_card c where c.customer_id = d.customer_id);
delete from dim_merchant as d where is_inferred
    and merchant_id in (select merchant_id from scratch_ids)
    and not exists (select 1 from fact_transaction f where f.merchant_id = d.merchant_id);
"""


def clear_scratch_rows(settings: Settings) -> None:
    """Delete the rows that the scratch topic and query left in PostgreSQL.

    That is facts, duplicates, quarantined messages, stream_batch rows, the fraud
    labels of those transactions, and inferred dimension rows no other fact uses.
    """
    _reject_main_lab(settings)
    with warehouse.connect(settings) as conn, conn.cursor() as cur:
        cur.execute(_DELETE_SCRATCH_ROWS, {"topic": settings.topic, "query": settings.query_name})
    conn.close()
    log.info("deleted the rows of topic %s and query %s", settings.topic, settings.query_name)


def reset_scratch(settings: Settings) -> None:
    """Recreate the scratch topic empty, delete its rows and remove its query's checkpoint."""
    _reject_main_lab(settings)
    kafka_broker.delete_topic(settings)
    kafka_broker.create_topic(settings)
    clear_scratch_rows(settings)
    shutil.rmtree(checkpoint_folder(settings), ignore_errors=True)
    log.info("reset scratch topic %s and query %s", settings.topic, settings.query_name)


def remove_scratch(settings: Settings) -> None:
    """Delete the scratch topic, its rows and its query's checkpoint."""
    _reject_main_lab(settings)
    kafka_broker.delete_topic(settings)
    clear_scratch_rows(settings)
    shutil.rmtree(checkpoint_folder(settings), ignore_errors=True)


def _reject_main_lab(settings: Settings) -> None:
    if settings.topic == MAIN_TOPIC or settings.query_name == streaming.QUERY_NAME:
        raise ValueError(
            f"topic {settings.topic} with query {settings.query_name} is not a scratch topic: "
            "it belongs to the main lab. Use scratch_settings(), or 'labkit lab reset' to "
            "empty the main lab"
        )
