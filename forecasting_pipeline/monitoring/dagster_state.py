"""Aggregates of the Dagster instance: runs, steps, pools, asset freshness and partition states,
asset checks.

Runs, steps and checks are counted in SQL over Dagster's own tables (through its SQLAlchemy
table definitions, in the deployment's database beside the domain schema), because the
instance API returns records one by one: a count of every run by job and status would load every
run. Step durations read only the step events of the runs that ended in the lookback (the event
log's run index). Partition states come from Dagster's asset status cache, which the UI keeps
too: brought up to date from the events since its last update, never rebuilt per scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, PartitionsDefinition
from dagster._core.instance.types import CachingDynamicPartitionsLoader
from dagster._core.storage.event_log.base import AssetEntry
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster._core.storage.runs.schema import RunsTable
from sqlalchemy import Connection

ENDED_STATUSES = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
QUANTILES = (0.5, 0.95, 1.0)
_STEP_END_EVENTS = ("STEP_SUCCESS", "STEP_FAILURE")
_CHECK_OUTCOMES = ("SUCCEEDED", "FAILED")


@dataclass(frozen=True)
class RunCount:
    job: str
    status: str
    runs: int


def run_counts(conn: Connection) -> list[RunCount]:
    runs = RunsTable.c
    rows = conn.execute(
        sa.select(runs.pipeline_name, runs.status, sa.func.count()).group_by(runs.pipeline_name, runs.status)
    ).all()
    return [RunCount(job, status, int(n)) for job, status, n in rows]


@dataclass(frozen=True)
class LastRun:
    job: str
    status: str
    end_time: float


def last_ended_runs(conn: Connection) -> list[LastRun]:
    """Each job's newest ended run (DISTINCT ON: one row per job from the status index)."""
    runs = RunsTable.c
    rows = conn.execute(
        sa.select(runs.pipeline_name, runs.status, runs.end_time)
        .where(runs.status.in_([s.value for s in ENDED_STATUSES]), runs.end_time.is_not(None))
        .order_by(runs.pipeline_name, runs.end_time.desc())
        .distinct(runs.pipeline_name)
    ).all()
    return [LastRun(job, status, float(end)) for job, status, end in rows]


def _quantile_columns(duration: sa.ColumnElement) -> list[sa.ColumnElement]:
    return [sa.func.percentile_cont(q).within_group(duration) for q in QUANTILES]


def run_duration_quantiles(conn: Connection, since: float) -> dict[str, tuple[float, ...]]:
    """Per job, the QUANTILES of the wall time of its runs that ended after `since` (Unix time)."""
    runs = RunsTable.c
    duration = runs.end_time - runs.start_time
    rows = conn.execute(
        sa.select(runs.pipeline_name, *_quantile_columns(duration))
        .where(runs.end_time > since, runs.start_time.is_not(None))
        .group_by(runs.pipeline_name)
    ).all()
    return {row[0]: tuple(float(v) for v in row[1:]) for row in rows}


def step_duration_quantiles(conn: Connection, since: float) -> dict[str, tuple[float, ...]]:
    """Per step key, the QUANTILES of the wall time of its executions in the runs that ended
    after `since`: from each step's first start to its last success or failure."""
    runs, events = RunsTable.c, SqlEventLogStorageTable.c
    recent = sa.select(runs.run_id).where(runs.end_time > since).scalar_subquery()
    per_step = (
        sa.select(
            events.step_key.label("step_key"),
            (
                sa.func.extract(
                    "epoch",
                    sa.func.max(events.timestamp).filter(events.dagster_event_type.in_(_STEP_END_EVENTS))
                    - sa.func.min(events.timestamp).filter(events.dagster_event_type == "STEP_START"),
                )
            ).label("seconds"),
        )
        .where(
            events.run_id.in_(recent),
            events.step_key.is_not(None),
            events.dagster_event_type.in_(("STEP_START", *_STEP_END_EVENTS)),
        )
        .group_by(events.run_id, events.step_key)
        .subquery()
    )
    rows = conn.execute(
        sa.select(per_step.c.step_key, *_quantile_columns(per_step.c.seconds))
        .where(per_step.c.seconds.is_not(None))
        .group_by(per_step.c.step_key)
    ).all()
    return {row[0]: tuple(float(v) for v in row[1:]) for row in rows}


@dataclass(frozen=True)
class PoolUse:
    pool: str
    slots: int
    in_use: int
    pending_steps: int


def pool_use(instance: DagsterInstance) -> list[PoolUse]:
    """Every concurrency pool the instance knows, with its limit and what holds or waits for it."""
    storage = instance.event_log_storage
    keys = sorted(storage.get_concurrency_keys())
    infos = storage.get_concurrency_infos(keys).values() if keys else []
    return [
        PoolUse(
            info.concurrency_key,
            info.limit if info.limit is not None else info.slot_count,
            info.active_slot_count,
            info.pending_step_count,
        )
        for info in infos
    ]


@dataclass(frozen=True)
class DaemonBeat:
    daemon: str
    timestamp: float  # Unix time of its newest heartbeat
    errors: int


def daemon_heartbeats(instance: DagsterInstance) -> list[DaemonBeat]:
    """The newest heartbeat of every daemon loop that ever ran against the instance."""
    return [
        DaemonBeat(daemon, beat.timestamp, len(beat.errors or ()))
        for daemon, beat in sorted(instance.get_daemon_heartbeats().items())
    ]


@dataclass(frozen=True)
class AssetState:
    asset: str
    last_materialization: float | None  # Unix time
    partitions: dict[str, int]  # materialized, failed, in_progress; empty when unpartitioned


@dataclass(frozen=True)
class _CountedPartitions:
    """Partition counts of an asset, and what they were counted from."""

    events: tuple[int | None, ...]  # the asset's newest event ids of each kind
    partitions_def: PartitionsDefinition
    counts: dict[str, int]


class AssetStateReader:
    """Freshness of every asset (one read of the asset records) and the partition counts of the
    partitioned ones from Dagster's status cache (updated incrementally, as the UI does).

    Counting a status cache means bringing it up to date and deserializing every partition
    subset: seconds at 10,000 series. An asset whose newest events are those it was counted from
    (and whose partitions definition did not move with the calendar) has the same counts, so
    those are kept between scrapes; one with partitions in progress is always recounted, since a
    run that ends without an event for it (canceled, crashed) changes them.
    """

    def __init__(self) -> None:
        self._counted: dict[AssetKey, _CountedPartitions] = {}

    def read(
        self, instance: DagsterInstance, partitions_by_asset: Mapping[AssetKey, PartitionsDefinition | None]
    ) -> list[AssetState]:
        records = {
            r.asset_entry.asset_key: r.asset_entry
            for r in instance.get_asset_records(list(partitions_by_asset))
        }
        series_keys = CachingDynamicPartitionsLoader(instance)  # read once per scrape, not per asset
        states = []
        for key, partitions_def in sorted(
            partitions_by_asset.items(), key=lambda item: item[0].to_user_string()
        ):
            entry = records.get(key)
            last = entry.last_materialization_record if entry else None
            counts: dict[str, int] = {}
            if partitions_def is not None and entry is not None:
                counts = self._counts(instance, series_keys, key, entry, partitions_def)
            states.append(AssetState(key.to_user_string(), last.timestamp if last else None, counts))
        return states

    def _counts(
        self,
        instance: DagsterInstance,
        series_keys: CachingDynamicPartitionsLoader,
        key: AssetKey,
        entry: AssetEntry,
        partitions_def: PartitionsDefinition,
    ) -> dict[str, int]:
        events = (
            entry.last_event_storage_id,
            entry.last_planned_materialization_storage_id,
            entry.last_failed_to_materialize_storage_id,
        )
        known = self._counted.get(key)
        if (
            known is not None
            and known.events == events
            and known.partitions_def is partitions_def
            and not known.counts.get("in_progress")
        ):
            return known.counts
        cache = get_and_update_asset_status_cache_value(instance, key, partitions_def, series_keys)
        if cache is None:
            return {}
        counts = {
            "materialized": len(cache.deserialize_materialized_partition_subsets(partitions_def)),
            "failed": len(cache.deserialize_failed_partition_subsets(partitions_def)),
            "in_progress": len(cache.deserialize_in_progress_partition_subsets(partitions_def)),
        }
        self._counted[key] = _CountedPartitions(events, partitions_def, counts)
        return counts


@dataclass(frozen=True)
class CheckOutcome:
    asset: str
    check: str
    passed: bool
    evaluated_at: float | None  # Unix time


def latest_check_outcomes(conn: Connection) -> list[CheckOutcome]:
    """The newest completed evaluation of every asset check (planned ones are not outcomes)."""
    checks = AssetCheckExecutionsTable.c
    rows = conn.execute(
        sa.select(
            checks.asset_key, checks.check_name, checks.execution_status, checks.evaluation_event_timestamp
        )
        .where(checks.execution_status.in_(_CHECK_OUTCOMES))
        .order_by(checks.asset_key, checks.check_name, checks.id.desc())
        .distinct(checks.asset_key, checks.check_name)
    ).all()
    evaluated = utc_timestamp(row[3] for row in rows)
    return [
        CheckOutcome(
            AssetKey.from_db_string(asset_key).to_user_string(),  # type: ignore[union-attr]
            name,
            status == "SUCCEEDED",
            when,
        )
        for (asset_key, name, status, _), when in zip(rows, evaluated, strict=True)
    ]


def utc_timestamp(moments: Iterable[datetime | None]) -> list[float | None]:
    """Unix times of database timestamps; naive ones are UTC, as every timestamp here is stored."""
    return [
        None if m is None else (m.replace(tzinfo=UTC) if m.tzinfo is None else m).timestamp() for m in moments
    ]
