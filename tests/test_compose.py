"""Static checks of the compose lab in lab/.

No Docker engine is needed: the tests parse lab/docker-compose.yml, lab/.env.example and
the Dockerfiles. The last test also validates the compose file with Debian's
`docker-compose` 1.29 when that command is installed, and skips otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
LAB_DIR = REPO_ROOT / "lab"
COMPOSE_FILE = LAB_DIR / "docker-compose.yml"
ENV_EXAMPLE = LAB_DIR / ".env.example"
DOCKERFILES = [LAB_DIR / "Dockerfile", LAB_DIR / "airflow.Dockerfile"]

# Design target: the limits of all services together leave room for the host system and a
# browser on a 16 GiB laptop.
LAPTOP_MEMORY_BUDGET_BYTES = 10 * 1024**3

# ${NAME}, ${NAME:-default} or ${NAME-default}, but not $${NAME}, which compose passes on
# to the container's shell as ${NAME}. Group 1 is the name, group 2 the default.
VARIABLE_REFERENCE = re.compile(r"(?<!\$)\$\{(\w+)(?::?-([^}]*))?\}")

COMPOSE_TEXT = COMPOSE_FILE.read_text(encoding="utf-8")
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
# The compose file without its comment lines, whose ${...} examples compose ignores.
COMPOSE_CODE = "\n".join(
    line for line in COMPOSE_TEXT.splitlines() if not line.lstrip().startswith("#")
)
SERVICES: dict[str, dict] = COMPOSE["services"]


def read_env_example() -> dict[str, str]:
    """Parse the NAME=value lines of lab/.env.example, skipping comments and blank lines."""
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, value = line.partition("=")
        assert separator, f"line without '=' in {ENV_EXAMPLE.name}: {line!r}"
        values[name.strip()] = value.strip()
    return values


def parse_memory(size: str | int) -> int:
    """Convert a compose memory size such as 512m or 1g to bytes."""
    match = re.fullmatch(r"(\d+)([bkmg]?)b?", str(size).strip().lower())
    if match is None:
        raise ValueError(f"invalid memory size: {size!r}")
    number, unit = match.groups()
    return int(number) * {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def memory_limit(service: dict) -> str | int | None:
    """Return the memory limit of a service from mem_limit or deploy.resources.limits."""
    if "mem_limit" in service:
        return service["mem_limit"]
    limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
    return limits.get("memory")


def published_ports(service: dict) -> list[str]:
    """Return the short-syntax port strings of a service, converting long-syntax entries."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            host_ip = port.get("host_ip", "")
            ports.append(f"{host_ip}:{port.get('published', '')}:{port.get('target', '')}")
        else:
            ports.append(str(port))
    return ports


def kafka_service() -> tuple[str, dict]:
    """Return the name and definition of the service that runs the apache/kafka image."""
    for name, service in SERVICES.items():
        if str(service.get("image", "")).startswith("apache/kafka:"):
            return name, service
    raise AssertionError("no service runs an apache/kafka image")


def listener_addresses(listeners: str) -> dict[str, str]:
    """Map each listener name to its host:port in a Kafka listeners value."""
    addresses = {}
    for entry in listeners.split(","):
        name, _, address = entry.strip().partition("://")
        addresses[name] = address
    return addresses


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_image_pinned_or_built(service_name):
    service = SERVICES[service_name]
    if "build" in service:
        return
    image = service.get("image", "")
    assert image, f"{service_name} has neither image nor build"
    repository, _, tag = image.rpartition(":")
    assert repository and "/" not in tag, f"{service_name} image {image!r} has no tag"
    assert tag != "latest", f"{service_name} image {image!r} uses the latest tag"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_base_image_pinned(dockerfile):
    from_lines = [
        line.split()[1]
        for line in dockerfile.read_text(encoding="utf-8").splitlines()
        if line.upper().startswith("FROM ")
    ]
    assert from_lines, f"{dockerfile.name} has no FROM line"
    for image in from_lines:
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{dockerfile.name}: {image!r} has no tag"
        assert tag != "latest", f"{dockerfile.name}: {image!r} uses the latest tag"


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_ports_bound_to_loopback(service_name):
    for port in published_ports(SERVICES[service_name]):
        assert port.startswith("127.0.0.1:"), (
            f"{service_name} publishes {port!r}; bind it as 127.0.0.1:HOST:CONTAINER"
        )


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_service_has_healthcheck(service_name):
    healthcheck = SERVICES[service_name].get("healthcheck")
    assert healthcheck, f"{service_name} has no healthcheck"
    assert healthcheck.get("test"), f"{service_name} healthcheck has no test"
    assert not healthcheck.get("disable", False), f"{service_name} healthcheck is disabled"


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_service_has_memory_limit(service_name):
    limit = memory_limit(SERVICES[service_name])
    assert limit is not None, f"{service_name} has no mem_limit"
    assert parse_memory(limit) > 0, f"{service_name} memory limit {limit!r} is not positive"


def test_memory_limits_fit_laptop():
    total = sum(parse_memory(memory_limit(service)) for service in SERVICES.values())
    assert total <= LAPTOP_MEMORY_BUDGET_BYTES, (
        f"memory limits add up to {total / 1024**3:.1f} GiB, "
        f"over the budget of {LAPTOP_MEMORY_BUDGET_BYTES / 1024**3:.0f} GiB"
    )


def test_kafka_advertises_host_listener():
    _, service = kafka_service()
    advertised = listener_addresses(service["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    assert "127.0.0.1:9092" in advertised.values(), (
        f"no advertised listener for the host at 127.0.0.1:9092 in {advertised}"
    )
    assert "127.0.0.1:9092:9092" in published_ports(service), (
        "the host listener's port 9092 is not published on 127.0.0.1:9092"
    )


def test_kafka_advertises_internal_listener():
    name, service = kafka_service()
    advertised = listener_addresses(service["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    internal = [address for address in advertised.values() if address.startswith(f"{name}:")]
    assert internal, f"no advertised listener on the service name {name!r} in {advertised}"


def test_kafka_has_controller_listener():
    _, service = kafka_service()
    environment = service["environment"]
    controller_names = environment["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    listeners = listener_addresses(environment["KAFKA_LISTENERS"])
    advertised = listener_addresses(environment["KAFKA_ADVERTISED_LISTENERS"])
    for controller in controller_names:
        assert controller in listeners, f"controller listener {controller} is not in listeners"
        assert controller not in advertised, f"controller listener {controller} is advertised"


def test_container_bootstrap_matches_kafka():
    name, service = kafka_service()
    advertised = listener_addresses(service["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    bootstrap = read_env_example()["LAB_KAFKA_BOOTSTRAP"]
    assert bootstrap in advertised.values(), (
        f"LAB_KAFKA_BOOTSTRAP={bootstrap} is not an address that {name} advertises: {advertised}"
    )


@pytest.mark.parametrize("variable", sorted(n for n in read_env_example() if n.startswith("LAB_")))
def test_env_example_variable_used(variable):
    used = {match.group(1) for match in VARIABLE_REFERENCE.finditer(COMPOSE_CODE)}
    assert variable in used, f"{variable} is in .env.example but not used in docker-compose.yml"


def test_compose_variables_documented():
    documented = read_env_example()
    used = {match.group(1) for match in VARIABLE_REFERENCE.finditer(COMPOSE_CODE)}
    missing = sorted(name for name in used if name not in documented)
    assert not missing, f"docker-compose.yml reads variables missing from .env.example: {missing}"


def test_compose_defaults_match_env_example():
    documented = read_env_example()
    for match in VARIABLE_REFERENCE.finditer(COMPOSE_CODE):
        name, default = match.groups()
        assert default is not None, f"${{{name}}} has no default; write ${{{name}:-value}}"
        assert default == documented.get(name), (
            f"default of {name} is {default!r} in docker-compose.yml "
            f"but {documented.get(name)!r} in .env.example"
        )


def test_dockerfile_jars_dir_matches_env_example():
    dockerfile = (LAB_DIR / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"^ARG LAB_JARS_DIR=(\S+)$", dockerfile, re.MULTILINE)
    assert match, "lab/Dockerfile has no ARG LAB_JARS_DIR with a default"
    expected = read_env_example()["LAB_JARS_DIR"]
    assert match.group(1) == expected, (
        f"lab/Dockerfile builds the jars into {match.group(1)}, .env.example says {expected}"
    )


def test_jupyter_gets_all_lab_settings():
    lab_variables = {name for name in read_env_example() if name.startswith("LAB_")}
    environment = SERVICES["jupyter"]["environment"]
    missing = sorted(lab_variables - set(environment))
    assert not missing, f"the jupyter service does not receive {missing}"


def test_airflow_versions_match_pyproject():
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]["dependencies"]
    pins = dict(dependency.split("==") for dependency in dependencies if "==" in dependency)
    dockerfile = (LAB_DIR / "airflow.Dockerfile").read_text(encoding="utf-8")
    # The tag may carry a Python suffix such as -python3.11.
    base_image = re.compile(
        rf"^FROM apache/airflow:{re.escape(pins['apache-airflow'])}(-python[0-9.]+)?$",
        re.MULTILINE,
    )
    assert base_image.search(dockerfile), (
        f"airflow.Dockerfile does not use apache-airflow {pins['apache-airflow']}"
    )
    assert f"DBT_CORE_VERSION={pins['dbt-core']}" in dockerfile, (
        f"airflow.Dockerfile does not install dbt-core {pins['dbt-core']}"
    )
    assert f"DBT_POSTGRES_VERSION={pins['dbt-postgres']}" in dockerfile, (
        f"airflow.Dockerfile does not install dbt-postgres {pins['dbt-postgres']}"
    )


def metabase_service() -> dict:
    """Return the definition of the service that runs the metabase/metabase image."""
    for service in SERVICES.values():
        if str(service.get("image", "")).startswith("metabase/metabase:"):
            return service
    raise AssertionError("no service runs a metabase/metabase image")


def test_metabase_image_is_release_tag():
    image = metabase_service()["image"]
    # Release tags look like v0.64.1 or v0.64.1.5; the enterprise image starts with v1.
    assert re.fullmatch(r"metabase/metabase:v0\.\d+\.\d+(\.\d+)?", image), (
        f"{image!r} is not pinned to an open-source Metabase release such as v0.64.1.5"
    )


def test_metabase_published_on_loopback():
    assert "127.0.0.1:3000:3000" in published_ports(metabase_service()), (
        "Metabase's port 3000 is not published on 127.0.0.1:3000"
    )


def test_metabase_healthcheck_uses_api_health():
    test = metabase_service()["healthcheck"]["test"]
    command = " ".join(test) if isinstance(test, list) else str(test)
    assert "127.0.0.1:3000/api/health" in command or "localhost:3000/api/health" in command, (
        f"the Metabase health check does not request /api/health: {command!r}"
    )


def test_metabase_application_database_persisted():
    service = metabase_service()
    environment = service["environment"]
    if environment.get("MB_DB_TYPE", "h2") != "h2":
        assert environment.get("MB_DB_HOST"), "MB_DB_TYPE is set without MB_DB_HOST"
        return
    db_file = environment.get("MB_DB_FILE", "")
    named_mounts = [
        volume.split(":")[1]
        for volume in service.get("volumes", [])
        if volume.split(":")[0] in (COMPOSE.get("volumes") or {})
    ]
    assert any(db_file.startswith(target.rstrip("/") + "/") for target in named_mounts), (
        f"MB_DB_FILE={db_file!r} is not on a named volume; mounts: {named_mounts}"
    )


def test_lab_containers_reach_metabase_by_service_name():
    url = SERVICES["jupyter"]["environment"]["LAB_METABASE_URL"]
    default = VARIABLE_REFERENCE.fullmatch(url).group(2)
    service_name = next(name for name, service in SERVICES.items()
                        if service is metabase_service())
    assert default == f"http://{service_name}:3000", default


def test_docker_compose_config_valid():
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        reason = "docker-compose (Debian package docker-compose) is not installed"
        print(f"skipping: {reason}")
        pytest.skip(reason)
    result = subprocess.run(
        [
            docker_compose,
            "-f",
            str(COMPOSE_FILE.relative_to(REPO_ROOT)),
            "--env-file",
            str(ENV_EXAMPLE.relative_to(REPO_ROOT)),
            "config",
            "-q",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"docker-compose config exited with {result.returncode}:\n{result.stderr}"
    )
