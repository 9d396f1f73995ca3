"""Dagster instance parts that find the deployment themselves, named in `dagster.yaml`.

`dagster dev`, `dg dev` and `dagster-daemon` read `./dagster.yaml` from wherever they start,
without the CLI's set-up. With these classes that file needs no variables: the storage uses
FP_DATABASE_URL when it is set and otherwise starts (or reuses) the embedded PostgreSQL under
FP_HOME, exactly as `forecasting-pipeline` does; run logs and artifacts go under the CLI's
Dagster home. So a Dagster user's first command in the repository root serves the same
deployment the CLI writes to. The URL is exported to the environment, so the webserver, daemon,
code servers and runs started from this process reuse it instead of starting servers of their own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from dagster import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.root import LocalArtifactStorage
from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.storage import DagsterPostgresStorage

from forecasting_pipeline.settings import DATABASE_URL_VAR, load_settings

EVENT_BATCH_SIZE_VAR = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = "1000"


def deployment_database_url() -> str:
    """FP_DATABASE_URL, or the embedded server's URL (started, schema upgraded) when it is unset."""
    url = os.environ.get(DATABASE_URL_VAR)
    if url:
        return url
    from forecasting_pipeline.bootstrap import prepare_deployment

    return prepare_deployment().database_url


class _ConfiguredByEnvironment:
    """A Dagster configurable class whose `dagster.yaml` block is empty: settings decide it."""

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]) -> Any:
        return cls(inst_data=inst_data, **cls.from_settings())

    @classmethod
    def from_settings(cls) -> dict[str, Any]:
        raise NotImplementedError


def _is_planned_materialization(event: EventLogEntry) -> bool:
    planned = DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    return event.dagster_event is not None and event.dagster_event.event_type == planned


class BulkPlannedEventLogStorage(PostgresEventLogStorage):
    """Dagster's PostgreSQL event log, writing a run's planned materializations in bulk.

    A run over N partition keys plans N events per asset before its first step. Dagster hands
    them over in batches (DAGSTER_EVENT_BATCH_SIZE) but its PostgreSQL storage writes only
    materializations in bulk; planned events go one INSERT and one new connection at a time,
    which measured 16 ms a key and asset here, the largest part of a weekly cycle's
    orchestration at 10,000 series. Each planned event is still its own row with its partition
    (so the UI shows each key in progress or failed, unlike Dagster's single-event
    `partitions_subset` mode); only the writing is batched: one multi-row INSERT, and one update
    of the asset's row per asset in the batch, as the single-event path leaves it.
    """

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        planned = [event for event in events if _is_planned_materialization(event)]
        others = [event for event in events if not _is_planned_materialization(event)]
        if planned:
            self._store_planned_batch(planned)
        if others:
            super().store_event_batch(others)

    def _store_planned_batch(self, events: Sequence[EventLogEntry]) -> None:
        statement = self.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id)
        with self._connect() as conn:
            event_ids = [int(row[0]) for row in conn.execute(statement).fetchall()]
        # The asset row keeps the last planned event (its run id and time), as one write per event would.
        last_per_asset = {
            event.dagster_event.asset_key: (event, event_id)  # type: ignore[union-attr]
            for event, event_id in zip(events, event_ids, strict=True)
        }
        with self.index_transaction() as conn:
            for event, event_id in last_per_asset.values():
                self._store_asset_event(conn, event, event_id)


class DeploymentPostgresStorage(_ConfiguredByEnvironment, DagsterPostgresStorage):
    """Dagster's PostgreSQL storage on the deployment's database, configured by the environment alone.

    Its event log is `BulkPlannedEventLogStorage`; runs, schedules and everything else are Dagster's.
    """

    def __init__(self, postgres_url: str, **kwargs: Any) -> None:
        super().__init__(postgres_url, **kwargs)
        self._event_log_storage = BulkPlannedEventLogStorage(postgres_url, self.should_autocreate_tables)

    @classmethod
    def from_settings(cls) -> dict[str, Any]:
        # Dagster batches event writes only when this is set; every process on this storage
        # (webserver, daemon, run workers) should, not only those the CLI prepared.
        os.environ.setdefault(EVENT_BATCH_SIZE_VAR, EVENT_BATCH_SIZE)
        return {"postgres_url": deployment_database_url()}


class DeploymentComputeLogManager(_ConfiguredByEnvironment, LocalComputeLogManager):
    """Step logs under the CLI's Dagster home (DAGSTER_HOME/storage), whoever launched the run."""

    @classmethod
    def from_settings(cls) -> dict[str, Any]:
        return {"base_dir": str(load_settings().dagster_home / "storage")}


class DeploymentArtifactStorage(_ConfiguredByEnvironment, LocalArtifactStorage):
    """Local artifacts under the CLI's Dagster home, not a `dagster dev` temporary folder."""

    @classmethod
    def from_settings(cls) -> dict[str, Any]:
        return {"base_dir": str(load_settings().dagster_home)}
