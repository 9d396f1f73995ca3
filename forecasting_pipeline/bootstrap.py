"""Prepare a process to talk to the deployment: database, Dagster home, schema, pools.

Used by the CLI before it runs anything. With no FP_DATABASE_URL this starts the embedded
PostgreSQL under FP_HOME and exports its URL, so `demo`, `ui` and the runs they launch share
one PostgreSQL-backed Dagster instance.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance

from forecasting_pipeline.assets.conventions import GPU_POOL
from forecasting_pipeline.instance import EVENT_BATCH_SIZE, EVENT_BATCH_SIZE_VAR
from forecasting_pipeline.resources.database import engine_for
from forecasting_pipeline.settings import (
    DAGSTER_HOME_VAR,
    DATABASE_URL_VAR,
    REPO_ROOT,
    Settings,
    load_settings,
)
from forecasting_pipeline.storage.embedded import start_embedded_server, with_psycopg2_driver
from forecasting_pipeline.storage.migrations import apply_migrations

INSTANCE_CONFIG = REPO_ROOT / "dagster.yaml"


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    database_url: str
    dagster_home: Path
    embedded: bool
    migrations_applied: list[str]


def prepare_deployment(settings: Settings | None = None) -> Deployment:
    """Resolve the database, export the variables Dagster reads, and upgrade the schema."""
    settings = settings or load_settings()
    embedded = settings.database_url is None
    url = with_psycopg2_driver(
        start_embedded_server(settings.embedded_db_dir) if embedded else settings.database_url
    )
    os.environ[DATABASE_URL_VAR] = url

    dagster_home = settings.dagster_home
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_config = dagster_home / "dagster.yaml"
    if not instance_config.exists() or (
        DAGSTER_HOME_VAR not in os.environ and instance_config.read_bytes() != INSTANCE_CONFIG.read_bytes()
    ):
        # A home we created follows the repository's dagster.yaml; a user's own file is kept.
        shutil.copyfile(INSTANCE_CONFIG, instance_config)
    os.environ[DAGSTER_HOME_VAR] = str(dagster_home)
    # Dagster writes a materialization event per partition key; batching those writes halves
    # the bookkeeping of a run over thousands of series × window cells (see FACTS.md).
    os.environ.setdefault(EVENT_BATCH_SIZE_VAR, EVENT_BATCH_SIZE)

    applied = apply_migrations(engine_for(url), settings.sql_dir)
    return Deployment(settings, url, dagster_home, embedded, applied)


def apply_pool_limits(instance: DagsterInstance, settings: Settings) -> None:
    """Set the `gpu` pool's limit only when configured (FP_GPU_POOL_LIMIT).

    Unset, the instance keeps whatever limit it has: dagster.yaml's default pool limit, or one
    an operator set in the UI; the CLI never resets it.
    """
    if settings.gpu_pool_limit is not None:
        instance.event_log_storage.set_concurrency_slots(GPU_POOL, settings.gpu_pool_limit)
