"""Java libraries the lab needs, resolved once from Maven Central with Maven.

The broker's jars and Spark's Kafka connector are copied into .lab/jars, so
starting the lab or a Spark session never downloads anything.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from labkit.config import REPO_ROOT, Settings
from labkit.processes import LabError

log = logging.getLogger(__name__)

POM_FOLDER = REPO_ROOT / "lab" / "maven"


def kafka_broker_dir(settings: Settings) -> Path:
    return settings.jars_dir / "kafka-broker"


def spark_kafka_dir(settings: Settings) -> Path:
    return settings.jars_dir / "spark-kafka"


def classpath(folder: Path) -> str:
    found = sorted(folder.glob("*.jar"))
    if not found:
        raise LabError(f"no jars in {folder}; run 'labkit jars' to resolve them with Maven")
    return ":".join(str(jar) for jar in found)


def spark_jars(settings: Settings) -> str:
    """Return the connector jars as a comma-separated list for spark.jars."""
    return classpath(spark_kafka_dir(settings)).replace(":", ",")


def resolve(settings: Settings) -> None:
    """Copy each pom's dependencies into its folder unless the folder already has jars."""
    targets = {
        "kafka-broker.pom.xml": kafka_broker_dir(settings),
        "spark-kafka.pom.xml": spark_kafka_dir(settings),
    }
    for pom, folder in targets.items():
        if any(folder.glob("*.jar")):
            continue
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LabError("Maven (mvn) not found; install it with 'apt-get install maven'")

        log.info("resolving %s into %s", pom, folder)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM_FOLDER / pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={partial}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise LabError(f"Maven could not resolve {pom}:\n{result.stdout[-2000:]}")
        # Renaming at the end means an interrupted download never looks complete.
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
