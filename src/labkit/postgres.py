"""The native lab's PostgreSQL server: a cluster in .lab/postgres on 127.0.0.1."""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shlex
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import psycopg2
from psycopg2 import sql

from labkit.config import Settings
from labkit.processes import LabError, port_is_free, wait_until

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root, so a root user runs it as this account.
SERVER_ACCOUNT = "postgres"


def server_bin_dir() -> Path:
    """Return the folder of initdb and pg_ctl, from LAB_PG_BIN or Debian's layout."""
    configured = os.environ.get("LAB_PG_BIN")
    candidates = [configured] if configured else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=_major_version, reverse=True
    )
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)

    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    raise LabError(
        "PostgreSQL server programs (initdb, pg_ctl) not found. Install them with "
        "'apt-get install postgresql' or set LAB_PG_BIN to the folder that holds them."
    )


def _major_version(folder: str) -> int:
    try:
        return int(Path(folder).parent.name)
    except ValueError:
        return 0


def _data_dir(settings: Settings) -> Path:
    return settings.home / "postgres" / "data"


def log_file(settings: Settings) -> Path:
    # The server writes this file itself, so it lives in a folder the server
    # account owns rather than in .lab/logs.
    return settings.home / "postgres" / "postgres.log"


def _run_as_server_account(args: list[str]) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        args = ["su", SERVER_ACCOUNT, "-s", "/bin/sh", "-c", shlex.join(args)]
    return subprocess.run(args, capture_output=True, text=True, check=False)


def _prepare_folder(settings: Settings) -> None:
    folder = settings.home / "postgres"
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(SERVER_ACCOUNT)
        except KeyError:
            raise LabError(
                f"running as root needs the '{SERVER_ACCOUNT}' account to own the server; "
                "install the postgresql package, which creates it"
            ) from None
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)


def is_healthy(settings: Settings) -> bool:
    try:
        with psycopg2.connect(connect_timeout=2, **settings.pg_connect_kwargs()) as conn:
            with conn.cursor() as cur:
                cur.execute("select 1")
                return cur.fetchone() == (1,)
    except psycopg2.Error:
        return False


def is_running(settings: Settings) -> bool:
    pg_ctl = server_bin_dir() / "pg_ctl"
    if not (_data_dir(settings) / "PG_VERSION").exists():
        return False
    result = _run_as_server_account([str(pg_ctl), "-D", str(_data_dir(settings)), "status"])
    return result.returncode == 0


def start(settings: Settings) -> None:
    """Create the cluster on first use, start it, and create the lab's role and database."""
    bin_dir = server_bin_dir()
    data_dir = _data_dir(settings)

    if is_running(settings):
        log.info("postgres already running in %s", data_dir)
    else:
        if not port_is_free(settings.pg_host, settings.pg_port):
            raise LabError(
                f"port {settings.pg_port} on {settings.pg_host} is taken by another program; "
                "stop it, or choose another port with LAB_PG_PORT"
            )
        _prepare_folder(settings)
        if not (data_dir / "PG_VERSION").exists():
            _initdb(bin_dir, data_dir)
        _pg_ctl_start(bin_dir, settings)

    wait_until(
        lambda: _superuser_can_connect(settings),
        timeout=30,
        what="postgres",
        hint=f"see {log_file(settings)}",
    )
    _create_role_and_database(settings)


def _initdb(bin_dir: Path, data_dir: Path) -> None:
    log.info("creating a PostgreSQL cluster in %s", data_dir)
    result = _run_as_server_account(
        [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres",
         "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]
    )
    if result.returncode != 0:
        raise LabError(f"initdb failed in {data_dir}:\n{result.stderr.strip()}")


def _pg_ctl_start(bin_dir: Path, settings: Settings) -> None:
    socket_dir = settings.home / "postgres"
    # The server listens on loopback only; trust authentication is safe there
    # because no other host can reach it.
    options = (
        f"-c listen_addresses={settings.pg_host} -p {settings.pg_port} "
        f"-c unix_socket_directories={socket_dir}"
    )
    result = _run_as_server_account(
        [str(bin_dir / "pg_ctl"), "-D", str(_data_dir(settings)), "-w", "-t", "30",
         "-l", str(log_file(settings)), "-o", options, "start"]
    )
    if result.returncode != 0:
        raise LabError(
            f"postgres failed to start: {result.stdout.strip()} {result.stderr.strip()}; "
            f"see {log_file(settings)}"
        )
    log.info("postgres started on %s:%d", settings.pg_host, settings.pg_port)


def _superuser_kwargs(settings: Settings) -> dict[str, object]:
    return {"host": settings.pg_host, "port": settings.pg_port, "user": "postgres",
            "dbname": "postgres", "connect_timeout": 2}


def _superuser_can_connect(settings: Settings) -> bool:
    try:
        psycopg2.connect(**_superuser_kwargs(settings)).close()
        return True
    except psycopg2.Error:
        return False


def _create_role_and_database(settings: Settings) -> None:
    conn = psycopg2.connect(**_superuser_kwargs(settings))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_roles where rolname = %s", (settings.pg_user,))
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("create role {} login password %s").format(
                        sql.Identifier(settings.pg_user)
                    ),
                    (settings.pg_password,),
                )
            create_bi_role(cur, settings)
            # The superuser may reset the password, so a changed LAB_BI_PASSWORD takes effect.
            cur.execute(
                sql.SQL("alter role {} password %s").format(sql.Identifier(settings.bi_user)),
                (settings.bi_password,),
            )
    finally:
        conn.close()
    create_database(settings, settings.pg_database)


def create_database(settings: Settings, name: str) -> None:
    """Create database name owned by the lab's role, unless it exists."""
    conn = psycopg2.connect(**_superuser_kwargs(settings))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("create database {} owner {}").format(
                        sql.Identifier(name), sql.Identifier(settings.pg_user)
                    )
                )
                log.info("created database %s", name)
    finally:
        conn.close()


def stop(settings: Settings) -> None:
    if not (_data_dir(settings) / "PG_VERSION").exists() or not is_running(settings):
        return
    result = _run_as_server_account(
        [str(server_bin_dir() / "pg_ctl"), "-D", str(_data_dir(settings)), "-m", "fast",
         "-w", "stop"]
    )
    if result.returncode != 0:
        raise LabError(f"postgres failed to stop: {result.stderr.strip()}")
    log.info("postgres stopped")


def schema_sql() -> str:
    return resources.files("labkit").joinpath("sql/schema.sql").read_text()


def apply_schema(settings: Settings) -> None:
    """Create the warehouse tables if they are missing; safe to run any number of times."""
    with psycopg2.connect(**settings.pg_connect_kwargs()) as conn:
        with conn.cursor() as cur:
            cur.execute(schema_sql())
            # The compose lab has no superuser step, so the BI role is created here. Its
            # lab user is the image's superuser; in the native lab the role exists already.
            create_bi_role(cur, settings)
    conn.close()


def create_bi_role(cur: psycopg2.extensions.cursor, settings: Settings) -> None:
    """Create the read-only BI role (settings.bi_user) unless it exists.

    The role may log in and nothing more: dbt grants it USAGE on the marts schema
    and SELECT on each mart (see dbt/dbt_project.yml), and the raw tables in
    public stay out of its reach. Every transaction of the role starts read-only
    as a second guard. Raises LabError when the role is missing and the
    connected user may not create roles.
    """
    cur.execute("select 1 from pg_roles where rolname = %s", (settings.bi_user,))
    if cur.fetchone() is not None:
        return

    role = sql.Identifier(settings.bi_user)
    try:
        cur.execute(
            sql.SQL(
                "create role {} login password %s "
                "nosuperuser nocreatedb nocreaterole noinherit noreplication"
            ).format(role),
            (settings.bi_password,),
        )
        cur.execute(
            sql.SQL("alter role {} set default_transaction_read_only = on").format(role)
        )
    except psycopg2.errors.InsufficientPrivilege:
        raise LabError(
            f"the read-only role {settings.bi_user!r} is missing and the role "
            f"{settings.pg_user!r} may not create it; create it as a superuser with "
            f"\"create role {settings.bi_user} login password '...'\", then run "
            "'labkit lab up' again"
        ) from None
    log.info("created the read-only role %s", settings.bi_user)
