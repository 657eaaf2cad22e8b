"""The native lab's Kafka broker: one KRaft node (broker and controller) on 127.0.0.1.

It runs from the jars Apache publishes on Maven Central, resolved once into
.lab/jars/kafka-broker by `labkit jars`.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from labkit import jars
from labkit.config import REPO_ROOT, Settings
from labkit.processes import (
    LabError,
    accepts_connections,
    port_is_free,
    read_pid,
    stop_process_group,
    wait_until,
)

log = logging.getLogger(__name__)

HEAP = os.environ.get("LAB_KAFKA_HEAP", "512m")


def _folder(settings: Settings) -> Path:
    return settings.home / "kafka"


def _pid_file(settings: Settings) -> Path:
    return _folder(settings) / "kafka.pid"


def log_file(settings: Settings) -> Path:
    return settings.logs_dir / "kafka.log"


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise LabError(
            "Java not found: Kafka and Spark need Java 17. Install it with "
            "'apt-get install openjdk-17-jre-headless' or set JAVA_HOME."
        )
    return found


def _server_properties(settings: Settings) -> str:
    host, port = settings.kafka_host, settings.kafka_port
    controller = f"{host}:{settings.kafka_controller_port}"
    data_dir = _folder(settings) / "data"
    # One node plays both KRaft roles, so every replication factor is 1.
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{controller}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{controller}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
num.partitions={settings.topic_partitions}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""


def _java_command(settings: Settings, main_class: str, *args: str) -> list[str]:
    classpath = jars.classpath(jars.kafka_broker_dir(settings))
    return [
        java_executable(),
        f"-Xmx{HEAP}",
        f"-Xms{HEAP}",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={REPO_ROOT / 'lab' / 'kafka' / 'log4j2.properties'}",
        "-cp",
        classpath,
        main_class,
        *args,
    ]


def _format_storage(settings: Settings, properties: Path) -> None:
    # KRaft needs its log folder formatted once with a cluster id: 16 random
    # bytes in URL-safe base64, as Kafka's own random-uuid command prints.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    command = _java_command(
        settings, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    log.info("formatted Kafka storage with cluster id %s", cluster_id)


def is_running(settings: Settings) -> bool:
    return read_pid(_pid_file(settings)) is not None


def is_healthy(settings: Settings) -> bool:
    # A plain connect first: the admin client would retry a closed port with backoff.
    if not accepts_connections(settings.kafka_host, settings.kafka_port):
        return False
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=3000
        )
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def start(settings: Settings) -> None:
    """Start the broker unless it runs already, and wait until it serves requests."""
    if is_running(settings):
        log.info("kafka already running (pid %s)", read_pid(_pid_file(settings)))
    else:
        for port in (settings.kafka_port, settings.kafka_controller_port):
            if not port_is_free(settings.kafka_host, port):
                raise LabError(
                    f"port {port} on {settings.kafka_host} is taken by another program; stop "
                    "it, or choose other ports with LAB_KAFKA_BOOTSTRAP and "
                    "LAB_KAFKA_CONTROLLER_PORT"
                )
        _launch(settings)

    wait_until(
        lambda: is_healthy(settings), timeout=60, what="kafka", hint=f"see {log_file(settings)}"
    )


def _launch(settings: Settings) -> None:
    folder = _folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)

    properties = folder / "server.properties"
    properties.write_text(_server_properties(settings))
    if not (folder / "data" / "meta.properties").exists():
        _format_storage(settings, properties)

    command = _java_command(settings, "kafka.Kafka", str(properties))
    with open(log_file(settings), "ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _pid_file(settings).write_text(str(process.pid))
    log.info("kafka starting (pid %d), logging to %s", process.pid, log_file(settings))


def stop(settings: Settings) -> None:
    pid = read_pid(_pid_file(settings))
    if pid is not None:
        stop_process_group(pid, "kafka")
    _pid_file(settings).unlink(missing_ok=True)


def admin_client(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)


def create_topic(settings: Settings) -> bool:
    """Create the lab's topic if it is missing; return True when it was created."""
    admin = admin_client(settings)
    try:
        admin.create_topics(
            [NewTopic(settings.topic, settings.topic_partitions, replication_factor=1)]
        )
        log.info("created topic %s with %d partitions", settings.topic, settings.topic_partitions)
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()


def delete_topic(settings: Settings, timeout: float = 30.0) -> None:
    """Delete the lab's topic and wait until the broker no longer lists it."""
    admin = admin_client(settings)
    try:
        try:
            admin.delete_topics([settings.topic])
        except UnknownTopicOrPartitionError:
            return
        deadline = time.monotonic() + timeout
        while settings.topic in admin.list_topics():
            if time.monotonic() > deadline:
                raise LabError(f"topic {settings.topic} was still listed {timeout:.0f} s after delete")
            time.sleep(0.3)
        log.info("deleted topic %s", settings.topic)
    finally:
        admin.close()
