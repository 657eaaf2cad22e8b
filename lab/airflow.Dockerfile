# Airflow image of the compose lab: the official image plus the dbt command line.
#
# lab/docker-compose.yml builds it with the repository root as the build context.

# The Python 3.11 variant, because requirements.lock was resolved on Python 3.11.
FROM apache/airflow:3.3.2-python3.11

# dbt gets a virtual environment of its own because installing it next to Airflow
# would let pip change versions of packages that Airflow's providers were tested with.
# requirements.lock constrains dbt's dependencies to the versions that the Jupyter image
# and the native lab use.
# Keep these versions equal to the dbt pins in pyproject.toml; tests/test_compose.py
# checks it.
ARG DBT_CORE_VERSION=1.11.16
ARG DBT_POSTGRES_VERSION=1.11.0
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /home/airflow/dbt-venv \
    && /home/airflow/dbt-venv/bin/pip install --no-cache-dir -c /tmp/requirements.lock \
        "dbt-core==${DBT_CORE_VERSION}" "dbt-postgres==${DBT_POSTGRES_VERSION}"

# The link puts `dbt` next to Airflow's python, where the DAG looks for it when
# LAB_DBT_BIN is unset, and on the PATH of a shell in the container.
RUN ln -s /home/airflow/dbt-venv/bin/dbt /home/airflow/.local/bin/dbt

# A new named volume copies the owner of the folder it is mounted on, so creating the
# folder here as the airflow user lets Airflow write to the volume.
RUN mkdir -p /opt/airflow/state
