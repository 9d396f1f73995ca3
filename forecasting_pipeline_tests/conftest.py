"""Test session: a real PostgreSQL server, a fresh database per session, a Dagster instance on it.

Server, in order of preference: FP_TEST_DATABASE_URL; the local server at 127.0.0.1:5432;
an embedded `pgserver` in a scratch folder. A production FP_DATABASE_URL is never used.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _scratch_dir(prefix: str) -> Path:
    # 0755: as root, the embedded server runs as its own system user and must traverse it.
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


# Settings are read when the package is imported, so the environment is pinned before that.
_HOME = _scratch_dir("fp-tests-")
os.environ["FP_HOME"] = str(_HOME)
os.environ["DAGSTER_HOME"] = str(_HOME / "dagster")
os.environ.pop("FP_DATABASE_URL", None)
for _name in (
    "FP_DATE_CADENCE",
    "FP_PARTITION_END",
    "FP_FORECAST_HORIZON",
    "FP_CALENDAR_HISTORY_WINDOWS",
    "FP_TARGET_MIN",
    "FP_TARGET_MAX",
    "FP_DQ_MAX_FAILING_FRACTION",
    "FP_FUTURE_TOLERANCE_HOURS",
    "FP_LANDING_DIR",
    # Scale-out: a developer's own broker, executor or object store never reaches the tests.
    "FP_EXECUTOR",
    "FP_CELERY_BROKER_URL",
    "FP_CELERY_BACKEND_URL",
    "FP_STORAGE_URI",
    "FP_TRAINING_DEVICES",
    "FP_TRAINING_STRATEGY",
):
    os.environ.pop(_name, None)
# In-process tests share one imported set of partitions, so their calendar is pinned (to the
# bundled data's windows); the calendar-from-data path runs in CLI subprocess tests.
TEST_PARTITION_START = "2016-10-02"
os.environ["FP_PARTITION_START"] = TEST_PARTITION_START
# Steps retried after a transient failure wait 50 ms, 100 ms, 200 ms instead of seconds.
os.environ["FP_RETRY_BASE_SECONDS"] = "0.05"

from sqlalchemy import create_engine, make_url, text  # noqa: E402

from forecasting_pipeline.storage.embedded import with_psycopg2_driver  # noqa: E402

# Small enough for 2 CPU cores, big enough to exercise the real training loop.
TINY_GLOBAL_MODEL = {"max_steps": 5, "input_size": 48, "batch_size": 8}
# Two trials of five steps per study: the real Optuna loop in PostgreSQL, at test size.
TINY_SEARCH = {"trials": 2, "trial_max_steps": 5}
# Two folds per series, the neural family with the tiny training above.
TINY_BACKTEST = {**TINY_GLOBAL_MODEL, "n_windows": 2}
# For stories about the families themselves: no ensemble rows beside theirs in the history.
FAMILIES_ONLY_BACKTEST = {**TINY_BACKTEST, "ensembles": False}


def land_and_ingest(deployment, instance):
    """The CLI's ingest path on the bundled dataset: land it, stage it, ingest the changed cells."""
    from forecasting_pipeline import operations
    from forecasting_pipeline.datasets import EPF_FR_BE, land_bundled_dataset

    land_bundled_dataset(EPF_FR_BE.name, deployment.settings.landing_dir)
    return operations.ingest(instance, deployment, progress=lambda _: None)


def scalar(engine, sql: str, **params):
    """One value from the database, for assertions on stored rows."""
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def query_frame(engine, sql: str, **params):
    """Rows of a query as a pandas frame, for assertions on stored tables."""
    import pandas as pd

    with engine.connect() as conn:
        return pd.read_sql(text(sql), conn, params=params)


def series_keys(instance) -> list[str]:
    return list(instance.get_dynamic_partitions("series"))


def ingest_and_forecast(deployment, instance):
    """The demo's path with a tiny model: ingest, then train and forecast the latest window."""
    from forecasting_pipeline import operations

    ingested = land_and_ingest(deployment, instance)
    forecasted = operations.forecast(
        instance,
        ingested.latest_window or "2016-10-30",
        series_keys(instance),
        global_model_config=TINY_GLOBAL_MODEL,
        search_config=TINY_SEARCH,
        backtest_config=TINY_BACKTEST,
    )
    return ingested, forecasted


def _local_server_url() -> str | None:
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    try:
        with create_engine(url, connect_args={"connect_timeout": 2}).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return None
    return url


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """An administrative URL of the PostgreSQL server the session uses."""
    configured = os.environ.get("FP_TEST_DATABASE_URL")
    if configured:
        yield with_psycopg2_driver(configured)
        return
    local = _local_server_url()
    if local:
        yield local
        return
    import pgserver

    server = pgserver.get_server(_scratch_dir("fp-tests-pg-") / "pgdata", cleanup_mode="delete")
    yield with_psycopg2_driver(server.get_uri())
    server.cleanup()


@pytest.fixture(scope="session")
def fresh_database(server_url: str) -> Iterator[Callable[[], str]]:
    """Factory of new, empty databases on the session's server; all dropped at the end."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def create() -> str:
        name = f"fp_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return make_url(server_url).set(database=name).render_as_string(hide_password=False)

    yield create
    from forecasting_pipeline.resources.database import engine_for

    engine_for.cache_clear()
    with admin.connect() as conn:
        for name in created:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="module")
def deployment(fresh_database: Callable[[], str]):
    """The module's deployment: its own database and landing folder, so modules run in any order."""
    from forecasting_pipeline.bootstrap import prepare_deployment
    from forecasting_pipeline.settings import load_settings

    os.environ["FP_DATABASE_URL"] = fresh_database()
    landing = _scratch_dir("fp-landing-")
    yield prepare_deployment(load_settings({**os.environ, "FP_LANDING_DIR": str(landing)}))
    import shutil

    shutil.rmtree(landing, ignore_errors=True)


@pytest.fixture(scope="module")
def instance(deployment):
    """A Dagster instance whose runs, events and schedules live in the module's database."""
    from dagster import DagsterInstance

    dagster_instance = DagsterInstance.get()
    yield dagster_instance
    dagster_instance.dispose()


@pytest.fixture(scope="module")
def db_engine(deployment):
    from forecasting_pipeline.resources.database import engine_for

    return engine_for(deployment.database_url)


def pytest_sessionfinish(session, exitstatus) -> None:
    import shutil

    shutil.rmtree(_HOME, ignore_errors=True)
