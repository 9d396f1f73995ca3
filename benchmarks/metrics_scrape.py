"""Scrape time of the Prometheus exporter on a weekly-cadence deployment of 10,000 series.

Builds, on a fresh database prepared by `prepare_deployment`, the state a deployment holds after
some weeks of weekly cycles, then times `forecasting-pipeline metrics`' registry over it:

* Dagster: N series as dynamic partitions; ~290 runs of the deployment's jobs in chronological
  order (a weekly cycle per window, the first ingest covering the history slice; corrections,
  cascades, drift retrains and accuracy runs between cycles, ~8 % of those failed; the newest
  window restated by a last ingest; one run in progress and one queued), with their run, step,
  asset-check, planned and materialization events. Every cell-level asset is materialized
  over the newest CELL_WINDOWS windows, every window-level asset per window. The rows are the
  ones Dagster's PostgreSQL storage writes, built by its own code (`_event_to_row`,
  `_tags_for_asset_event`, the columns its run and asset-check methods set); a run's cells are
  copied in SQL from one serialized event per asset and window with the series key, data
  version and indexed tags substituted (checked: a copy deserializes to the event Dagster
  would have stored, with the same tags), and each asset's `asset_keys` row is then written
  by the storage itself from the asset's newest events. Through the storage's own per-event
  calls (a new connection per event, schema reflection per run event) writing this took 170 s
  at 500 series.
* Domain rows, set-based SQL: series, a few hundred landed files, 50,000 quarantined rows over
  six reasons with their totals per reason (as the quarantining statement keeps them), forecast
  accuracy of N series × 8 windows × 5 models with champion flags, hundreds of resource
  records, drift events and requests, the cascade queue holding the restated newest window
  (N cells queued after their downstream was materialized: the most expensive case for the
  stale-partition probe), and a few million observations the exporter must not read.

The database is vacuumed and analyzed, as autovacuum leaves a deployment. Then the registry is
built once (this loads the definitions) and scraped: the first scrape (Dagster's asset status
cache is built), warm scrapes through `generate_latest`, one over HTTP with `serving`, one
after the run in progress materialized its cells (the cache's incremental update) and one
after a new series landed (the series dimension changed). Recorded:
each section's time from `fp_exporter_section_seconds`, wall times, the exposition's size and
samples, every SQL statement of a warm scrape by section with EXPLAIN ANALYZE of the slowest,
a profile of a warm scrape, and the table scans a warm scrape makes (pg_stat_user_tables:
`forecasting.observations` must not appear).

Usage: python benchmarks/metrics_scrape.py [--series 10000] [--observation-hours 336]
Writes benchmarks/results/metrics_scrape_<series>.json and prints a summary for the README.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from _common import configure, fresh_database, peak_rss_mb, write_result
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

COMPLETE_WINDOWS = 9  # the history slice and eight weekly windows before the one in progress
CELL_WINDOWS = 5  # newest windows the whole graph ran for (one weekly cycle each)
SCORED_WINDOWS = 8
SMALL_RUNS_PER_WEEK = 48
FAILED_SHARE = 0.08
WARM_SCRAPES = 5
IN_PROGRESS_CELLS = 2_000
SLOW_STATEMENT_S = 0.1
MODELS = ("AutoETS", "AutoTheta", "NHITS", "SeasonalNaive", "TiDE")
FILES_PER_WEEK = 40
QUARANTINE_ROWS = 50_000
REASONS = (
    "missing or non-numeric target",
    "duplicate timestamp, superseded by a later row",
    "exact duplicate of a later row",
    "unparseable timestamp (expected ISO 8601, e.g. 2024-01-31 or 2024-01-31T13:00:00Z)",
    "timestamp in the future",
    "non-finite target",
)
JOB_STEPS = {
    "ingest_observations": ("raw_observations",),
    "version_observation_history": ("observation_history",),
    "study_correlations": ("correlation_study",),
    "study_series": ("feature_table", "granger_study"),
    "train_models": ("training_panel", "hyperparameter_search", "global_models", "local_models"),
    "publish_forecasts": ("backtest_folds", "model_selection", "predictions"),
    "measure_feature_effects": ("feature_effects",),
    "score_forecast_accuracy": ("forecast_accuracy",),
}
CELL_JOBS = {"ingest_observations", "study_series", "publish_forecasts", "score_forecast_accuracy"}
# Wall time of each job's run over a whole window at 10,000 series (weekly_cycle_10000.json's order).
CYCLE_SECONDS = {
    "ingest_observations": 280,
    "version_observation_history": 40,
    "study_correlations": 150,
    "study_series": 620,
    "train_models": 1900,
    "publish_forecasts": 2500,
    "measure_feature_effects": 300,
    "score_forecast_accuracy": 120,
}
CHECKS = {
    "raw_observations": (
        "required_columns",
        "timestamps_parse",
        "no_gaps",
        "no_conflicting_duplicates",
        "finite_targets",
        "on_series_grid",
        "series_ids_present",
        "within_bounds",
    ),
    "model_selection": ("promotions_confirmed",),
}
PARTITION_TAG = "dagster/partition/"
DATA_VERSION_TAG = "dagster/data_version"


def series_key(index: int) -> str:
    return f"store-{index:05d}"


def data_version(run_id: str, partition: str) -> str:
    """A cell's data version; the SQL copy computes the same (`md5(run_id || partition)`)."""
    return hashlib.md5((run_id + partition).encode()).hexdigest()


@dataclass
class Run:
    """One Dagster run to write: its job, times, the cells or windows it covers and its fate."""

    job: str
    start: float
    seconds: float
    windows: list[str]
    series: list[str] | None  # the series keys of a cell job; None for a window job
    status: str = "SUCCESS"  # SUCCESS, FAILURE (its first step fails), STARTED or QUEUED
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def tags(self) -> dict[str, str]:
        if self.series is None:
            return {"dagster/partition": self.windows[0]}
        return {
            "dagster/asset_partition_range_start": f"{self.windows[0]}|{self.series[0]}",
            "dagster/asset_partition_range_end": f"{self.windows[-1]}|{self.series[-1]}",
        }


def plan_runs(series: list[str], windows: list[str], now: float, rng: random.Random) -> list[Run]:
    """The deployment's runs, oldest first: a weekly cycle per cell window with the first ingest
    covering the history, sensor-launched runs between cycles, then the newest window restated."""
    cell_windows = windows[-CELL_WINDOWS:]
    runs: list[Run] = []
    hour = 3600.0
    cycle_starts = [now - 30 * hour - 7 * 24 * hour * (CELL_WINDOWS - 1 - k) for k in range(CELL_WINDOWS)]
    for k, window in enumerate(cell_windows):
        t = cycle_starts[k]
        ingested = windows[: len(windows) - CELL_WINDOWS + 1] if k == 0 else [window]
        cycle = [("ingest_observations", ingested)]
        cycle += [("version_observation_history", [w]) for w in ingested]
        cycle += [(job, [window]) for job in list(JOB_STEPS)[2:]]
        for job, covered in cycle:
            seconds = CYCLE_SECONDS[job] * (len(covered) if job in CELL_JOBS else 1)
            runs.append(Run(job, t, seconds, covered, series if job in CELL_JOBS else None))
            t += seconds + 20
        week_end = cycle_starts[k + 1] if k + 1 < CELL_WINDOWS else now - 40 * 60
        for _ in range(SMALL_RUNS_PER_WEEK):
            kind = rng.random()
            some = sorted(rng.sample(series, min(len(series), rng.randint(1, 40))))
            if kind < 0.40:  # a corrected file for a recent window
                job, covered = "ingest_observations", [rng.choice(windows[-CELL_WINDOWS:][: k + 1][-3:])]
            elif kind < 0.70:  # the cascade re-forecasting what the correction changed
                job, covered = "publish_forecasts", [window]
            elif kind < 0.85:  # a drift retrain
                job, covered = "publish_forecasts", [window]
                some = sorted(rng.sample(series, min(len(series), rng.randint(20, 200))))
            else:
                job, covered = "score_forecast_accuracy", [window]
            start = rng.uniform(t + hour, week_end - hour)
            seconds = 30 + len(some) * CYCLE_SECONDS[job] / 2_000
            status = "FAILURE" if rng.random() < FAILED_SHARE else "SUCCESS"
            runs.append(Run(job, start, seconds, covered, some, status))
    newest = windows[-1]
    runs.append(Run("ingest_observations", now - 25 * 60, 280, [newest], series))  # the restatement
    runs.append(
        Run("score_forecast_accuracy", now - 8 * 60, 600, [newest], series[:IN_PROGRESS_CELLS], "STARTED")
    )
    runs.append(Run("version_observation_history", now - 5 * 60, 40, [newest], None, "QUEUED"))
    return sorted(runs, key=lambda run: run.start)


class EventWriter:
    """Writes planned runs' events as the rows Dagster's PostgreSQL storage writes for them,
    through one connection per run (see the module doc)."""

    def __init__(self, instance, engine) -> None:
        from dagster import AssetKey

        self.instance = instance
        self.storage = instance.event_log_storage
        self.engine = engine
        self.asset_key = AssetKey
        self.pending: list = []
        self.newest: dict[tuple[str, str], tuple[int, object]] = {}  # (asset, event type) -> (id, entry)

    def entry(self, run: Run, at: float, event_type: str, step: str | None = None, data=None, message=""):
        from dagster._core.definitions.dependency import NodeHandle
        from dagster._core.events import DagsterEvent
        from dagster._core.events.log import EventLogEntry
        from dagster._core.execution.plan.handle import StepHandle

        dagster_event = DagsterEvent(
            event_type_value=event_type,
            job_name=run.job,
            step_handle=StepHandle(NodeHandle(step, None)) if step else None,
            step_kind_value="COMPUTE" if step else None,
            event_specific_data=data,
            message=message,
            pid=os.getpid(),
        )
        return EventLogEntry(
            error_info=None,
            level=logging.DEBUG,
            user_message=message,
            run_id=run.run_id,
            timestamp=at,
            step_key=step,
            job_name=run.job,
            dagster_event=dagster_event,
        )

    def planned(self, run: Run, at: float, asset: str, partition: str):
        from dagster._core.events import AssetMaterializationPlannedData

        data = AssetMaterializationPlannedData(self.asset_key(asset), partition=partition)
        message = f"{run.job} intends to materialize asset {asset}"
        return self.entry(run, at, "ASSET_MATERIALIZATION_PLANNED", None, data, message)

    def materialization(self, run: Run, at: float, asset: str, partition: str):
        from dagster import AssetMaterialization
        from dagster._core.events import StepMaterializationData

        tags = {"dagster/code_version": f"{asset}-v3", DATA_VERSION_TAG: data_version(run.run_id, partition)}
        if "|" in partition:
            window, series = partition.split("|")
            tags.update({f"{PARTITION_TAG}date": window, f"{PARTITION_TAG}series": series})
        materialization = AssetMaterialization(
            asset_key=self.asset_key(asset), partition=partition, metadata={"rows": 168}, tags=tags
        )
        data = StepMaterializationData(materialization)
        return self.entry(run, at, "ASSET_MATERIALIZATION", asset, data, f"Materialized value {asset}.")

    def check_planned(self, run: Run, at: float, asset: str, check: str):
        from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned

        data = AssetCheckEvaluationPlanned(asset_key=self.asset_key(asset), check_name=check)
        return self.entry(run, at, "ASSET_CHECK_EVALUATION_PLANNED", asset, data, f"{check} planned")

    def check_evaluation(self, run: Run, at: float, asset: str, check: str, passed: bool):
        from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

        data = AssetCheckEvaluation(
            asset_key=self.asset_key(asset),
            check_name=check,
            passed=passed,
            metadata={"unexpected_fraction": 0.0 if passed else 0.03},
            blocking=check != "no_gaps",
        )
        return self.entry(run, at, "ASSET_CHECK_EVALUATION", asset, data, f"{check} evaluated")

    def flush(self, conn) -> None:
        """Write the pending events in order, with what the storage indexes for each."""
        from dagster._core.storage.event_log.schema import (
            AssetCheckExecutionsTable,
            AssetEventTagsTable,
            SqlEventLogStorageTable,
        )
        from dagster._serdes import serialize_value

        if not self.pending:
            return
        pending = list(self.pending)
        self.pending.clear()
        rows = [self.storage._event_to_row(entry) for entry in pending]
        insert = SqlEventLogStorageTable.insert().returning(
            SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
        )
        ids = [row[0] for row in conn.execute(insert, rows)]
        checks = AssetCheckExecutionsTable.c
        for entry, row, event_id in zip(pending, rows, ids, strict=True):
            kind = row["dagster_event_type"]
            data = entry.dagster_event.event_specific_data
            if kind in ("ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION_PLANNED"):
                self.newest[(entry.dagster_event.asset_key.to_user_string(), kind)] = (event_id, entry)
                tags = self.storage._tags_for_asset_event(entry)
                if tags:
                    conn.execute(
                        AssetEventTagsTable.insert(),
                        [
                            {
                                "event_id": event_id,
                                "asset_key": row["asset_key"],
                                "key": k,
                                "value": v,
                                "event_timestamp": row["timestamp"],
                            }
                            for k, v in tags.items()
                        ],
                    )
            elif kind == "ASSET_CHECK_EVALUATION_PLANNED":  # as _store_asset_check_evaluation_planned
                conn.execute(
                    AssetCheckExecutionsTable.insert().values(
                        asset_key=data.asset_key.to_string(),
                        check_name=data.check_name,
                        partition=None,
                        run_id=entry.run_id,
                        execution_status="PLANNED",
                        evaluation_event=row["event"],
                        evaluation_event_timestamp=row["timestamp"],
                        evaluation_event_storage_id=event_id,
                    )
                )
            elif kind == "ASSET_CHECK_EVALUATION":  # as _update_asset_check_evaluation
                conn.execute(
                    AssetCheckExecutionsTable.update()
                    .where(
                        checks.asset_key == data.asset_key.to_string(),
                        checks.check_name == data.check_name,
                        checks.run_id == entry.run_id,
                    )
                    .values(
                        execution_status="SUCCEEDED" if data.passed else "FAILED",
                        evaluation_event=serialize_value(entry),
                        evaluation_event_timestamp=row["timestamp"],
                        evaluation_event_storage_id=event_id,
                    )
                )

    def cells(
        self, conn, run: Run, at: float, asset: str, window: str, series: list[str], planned: bool
    ) -> None:
        """One event per cell of `window` × `series`, copied in SQL from the last cell's event."""
        self.flush(conn)
        last = f"{window}|{series[-1]}"
        template = (self.planned if planned else self.materialization)(run, at, asset, last)
        row = self.storage._event_to_row(template)
        occurrences = row["event"].count(series[-1])
        assert occurrences == (1 if planned else 2), f"{occurrences} occurrences of the series key"
        tagged = (
            ""
            if planned
            else """, tagged AS (
                INSERT INTO asset_event_tags (event_id, asset_key, key, value, event_timestamp)
                SELECT s.id, :asset_key, t.key, t.value, :timestamp
                FROM stored s CROSS JOIN LATERAL (VALUES
                    (:version_tag, md5(:run_id || s.partition)),
                    (:date_tag, CAST(:window AS text)),
                    (:series_tag, split_part(s.partition, '|', 2))) AS t(key, value)
            )"""
        )
        copy = f"""
            WITH keys AS (
                SELECT s AS series_key, CAST(:window AS text) || '|' || s AS partition
                FROM unnest(CAST(:series AS text[])) WITH ORDINALITY AS k(s, n) ORDER BY n
            ), stored AS (
                INSERT INTO event_logs
                    (run_id, event, dagster_event_type, timestamp, step_key, asset_key, partition)
                SELECT :run_id,
                       replace(replace(:event, :version, md5(:run_id || k.partition)), :token, k.series_key),
                       :event_type, :timestamp, :step_key, :asset_key, k.partition
                FROM keys k
                RETURNING id, partition
            ){tagged}
            SELECT id FROM stored WHERE partition = :last
        """
        indexed = set(self.storage._tags_for_asset_event(template))
        assert planned or indexed == {DATA_VERSION_TAG, f"{PARTITION_TAG}date", f"{PARTITION_TAG}series"}, (
            indexed
        )
        last_id = conn.execute(
            text(copy),
            {
                **{k: row[k] for k in ("run_id", "event", "timestamp", "step_key", "asset_key")},
                "event_type": row["dagster_event_type"],
                "window": window,
                "series": series,
                "last": last,
                "version": data_version(run.run_id, last),
                "token": series[-1],
                "version_tag": DATA_VERSION_TAG,
                "date_tag": f"{PARTITION_TAG}date",
                "series_tag": f"{PARTITION_TAG}series",
            },
        ).scalar_one()
        self.newest[(asset, row["dagster_event_type"])] = (last_id, template)

    def run(self, run: Run, rng: random.Random) -> None:
        from dagster import DagsterRun, DagsterRunStatus

        self.instance.add_run(
            DagsterRun(
                job_name=run.job, run_id=run.run_id, status=DagsterRunStatus.NOT_STARTED, tags=run.tags
            )
        )
        with self.engine.begin() as conn:
            self.pending.append(self.entry(run, run.start - 5, "PIPELINE_ENQUEUED"))
            if run.status != "QUEUED":
                self.pending.append(self.entry(run, run.start - 2, "PIPELINE_STARTING"))
                message = f'Started execution of run for "{run.job}".'
                self.pending.append(self.entry(run, run.start, "PIPELINE_START", message=message))
                self.plan(conn, run)
                self.execute(conn, run, rng)
            self.flush(conn)
            self.record_run(conn, run)

    def resume(self, run: Run, rng: random.Random) -> None:
        """The run in progress succeeds now: its steps' remaining events and its end."""
        run.status, run.seconds = "SUCCESS", time.time() - run.start
        with self.engine.begin() as conn:
            self.execute(conn, run, rng, started=True)
            self.flush(conn)
            self.record_run(conn, run)

    def record_run(self, conn, run: Run) -> None:
        """The run's row as the run storage leaves it after these events (`handle_run_event`)."""
        from dagster import DagsterRunStatus
        from dagster._serdes import serialize_value

        ended = run.status in ("SUCCESS", "FAILURE")
        body = None  # a queued run's body keeps NOT_STARTED: QUEUED wants the code location's origin
        if run.status != "QUEUED":
            dagster_run = self.instance.get_run_by_id(run.run_id)
            body = serialize_value(dagster_run.with_status(DagsterRunStatus(run.status)))
        conn.execute(
            text(
                "UPDATE runs SET status = :status, run_body = coalesce(:body, run_body), "
                "start_time = :start, end_time = :end, "
                "create_timestamp = to_timestamp(:created) AT TIME ZONE 'UTC', "
                "update_timestamp = to_timestamp(:updated) AT TIME ZONE 'UTC' WHERE run_id = :run_id"
            ),
            {
                "status": run.status,
                "body": body,
                "start": None if run.status == "QUEUED" else run.start,
                "end": run.start + run.seconds if ended else None,
                "created": run.start - 5,
                "updated": run.start + run.seconds if ended else run.start,
                "run_id": run.run_id,
            },
        )

    def plan(self, conn, run: Run) -> None:
        """What the run will materialize and check, written at its start."""
        for asset in JOB_STEPS[run.job]:
            for check in CHECKS.get(asset, ()):
                self.pending.append(self.check_planned(run, run.start + 1, asset, check))
            for window in run.windows:
                if run.series is None:
                    self.pending.append(self.planned(run, run.start + 1, asset, window))
                else:
                    self.cells(conn, run, run.start + 1, asset, window, run.series, planned=True)

    def execute(self, conn, run: Run, rng: random.Random, started: bool = False) -> None:
        """The steps, one per asset; a failed run fails its first step, one in progress stops in
        its first step; `started`: that first step already started."""
        from dagster._core.events import StepFailureData, StepSuccessData
        from dagster._utils.error import SerializableErrorInfo

        add = self.pending.append
        steps = JOB_STEPS[run.job]
        step_seconds = run.seconds / len(steps)
        for index, asset in enumerate(steps):
            began = run.start + 3 + index * step_seconds
            ended = began + step_seconds - 3
            if not (started and index == 0):
                add(
                    self.entry(
                        run, began, "STEP_START", asset, message=f'Started execution of step "{asset}".'
                    )
                )
            if run.status == "STARTED":
                return
            if run.status == "FAILURE":
                error = SerializableErrorInfo(
                    "OperationalError: server closed the connection", [], "OperationalError"
                )
                data = StepFailureData(error=error, user_failure_data=None)
                add(
                    self.entry(
                        run, ended, "STEP_FAILURE", asset, data, f'Execution of step "{asset}" failed.'
                    )
                )
                break
            for window in run.windows:
                if run.series is None:
                    add(self.materialization(run, ended, asset, window))
                else:
                    self.cells(conn, run, ended, asset, window, run.series, planned=False)
            for check in CHECKS.get(asset, ()):
                passed = rng.random() > {"no_gaps": 0.3, "within_bounds": 0.05}.get(check, 0.0)
                add(self.check_evaluation(run, ended, asset, check, passed))
            data = StepSuccessData(duration_ms=1000 * (ended - began))
            add(self.entry(run, ended, "STEP_SUCCESS", asset, data, f'Finished execution of step "{asset}".'))
        end = run.start + run.seconds
        if run.status == "FAILURE":
            add(self.entry(run, end, "PIPELINE_FAILURE", message=f'Execution of run for "{run.job}" failed.'))
        else:
            add(
                self.entry(
                    run, end, "PIPELINE_SUCCESS", message=f'Finished execution of run for "{run.job}".'
                )
            )

    def finish(self) -> None:
        """Each asset's row from its newest planned and materialization events, by the storage."""
        for event_id, entry in sorted(self.newest.values(), key=lambda item: item[0]):
            self.storage.store_asset_event(entry, event_id)
        self.newest = {}

    def check_copy(self, run: Run, asset: str, window: str, series: str) -> None:
        """A copied row must deserialize to the event Dagster would have stored for its cell."""
        from dagster._core.events.log import EventLogEntry
        from dagster._serdes import deserialize_value

        partition = f"{window}|{series}"
        with self.engine.connect() as conn:
            stored, tags = conn.execute(
                text(
                    "SELECT e.event, (SELECT array_agg(t.key || '=' || t.value ORDER BY t.key) "
                    "FROM asset_event_tags t "
                    "WHERE t.event_id = e.id) FROM event_logs e WHERE e.run_id = :run AND e.asset_key = :key "
                    "AND e.partition = :p AND e.dagster_event_type = 'ASSET_MATERIALIZATION'"
                ),
                {"run": run.run_id, "key": self.asset_key(asset).to_string(), "p": partition},
            ).one()
        entry = deserialize_value(stored, EventLogEntry)
        expected = self.materialization(run, entry.timestamp, asset, partition)
        assert (
            entry.dagster_event.step_materialization_data == expected.dagster_event.step_materialization_data
        )
        assert entry.dagster_event.partition == partition
        assert tags == sorted(f"{k}={v}" for k, v in self.storage._tags_for_asset_event(expected).items()), (
            tags
        )


def seed_domain(engine, series: int, windows: list[str], now: datetime, observation_hours: int) -> dict:
    """The domain tables at scale, set-based. Returns seconds per table."""
    newest = date.fromisoformat(windows[-1])
    first_ts = datetime.combine(date.fromisoformat(windows[0]), datetime.min.time()) - timedelta(weeks=52)
    last_ts = datetime.combine(newest + timedelta(days=7), datetime.min.time()) - timedelta(hours=1)
    scored = windows[-SCORED_WINDOWS:]
    params = {
        "series": series,
        "first_ts": first_ts,
        "last_ts": last_ts,
        "now": now,
        "windows": windows,
        "scored": scored,
        "models": list(MODELS),
        "reasons": list(REASONS),
        "files_per_week": FILES_PER_WEEK,
        "weeks": SCORED_WINDOWS,
        "per_file": max(1, series // FILES_PER_WEEK),
        "quarantine": QUARANTINE_ROWS,
        "hours": observation_hours,
        "obs_start": last_ts - timedelta(hours=observation_hours - 1),
    }
    key = "'store-' || lpad(CAST({} AS text), 5, '0')"
    unit = "(abs(hashtext({})) % 100000) / 100000.0"  # a stable pseudo-random number in [0, 1)
    statements = {
        "series": f"""
            INSERT INTO forecasting.datasets (dataset_id, description, source)
            VALUES ('stores', 'Hourly sales per store (synthetic)', 'metrics_scrape benchmark');
            INSERT INTO forecasting.series
                (series_id, dataset_id, freq, first_ts, last_ts, partition_key, created_at, updated_at)
            SELECT {key.format("i")}, 'stores', 'h', :first_ts, :last_ts, {key.format("i")},
                   CAST(:now AS timestamptz) - interval '60 days',
                   CAST(:now AS timestamptz) - interval '25 minutes'
            FROM generate_series(0, :series - 1) AS i
        """,
        "landed_files": f"""
            INSERT INTO forecasting.landed_files
                (path, file_name, size_bytes, modified_at, content_hash, file_format, status, reason,
                 rows_read, rows_accepted, first_ts, last_ts, series_count, series_ids, staged_at,
                 ingested_at, batch_id, dagster_run_id)
            SELECT '/data/landing/' || f.name, f.name, 1900000 + f.n * 17, f.landed, md5(f.name), 'csv',
                   f.status,
                   CASE f.status WHEN 'rejected' THEN 'no timestamp column'
                                 WHEN 'held' THEN 'held by failed quality checks: within_bounds' END,
                   f.rows, f.rows, f.week_start, f.week_start + interval '167 hours', :per_file,
                   ARRAY(SELECT {key.format("s")} FROM generate_series(f.part * :per_file,
                                                                         (f.part + 1) * :per_file - 1) AS s),
                   f.landed, CASE WHEN f.status = 'ingested' THEN f.landed + interval '10 minutes' END,
                   'batch-' || f.n / :files_per_week, CASE WHEN f.status = 'ingested' THEN md5(f.name) END
            FROM (
                SELECT n, n / :files_per_week AS week, n % :files_per_week AS part,
                       'sales_' || (n / :files_per_week) || '_'
                           || lpad(CAST(n % :files_per_week AS text), 3, '0') || '.csv' AS name,
                       CAST((CAST(:windows AS text[]))[array_length(CAST(:windows AS text[]), 1) - :weeks + 1
                                                     + n / :files_per_week] AS timestamp) AS week_start,
                       CAST(:now AS timestamptz) - (:weeks - 1 - n / :files_per_week) * interval '7 days'
                           - interval '30 hours' AS landed,
                       CASE WHEN n = :weeks * :files_per_week - 1 THEN 'staged'
                            WHEN n = :weeks * :files_per_week - 2 THEN 'held'
                            WHEN n % 97 = 13 THEN 'rejected' ELSE 'ingested' END AS status,
                       CASE WHEN n % 97 = 13 THEN 0 ELSE :per_file * 168 END AS rows
                FROM generate_series(0, :weeks * :files_per_week - 1) AS n
            ) AS f
        """,
        "quarantine": f"""
            WITH files AS (
                SELECT array_agg(file_id ORDER BY file_id) AS ids FROM forecasting.landed_files
                WHERE status <> 'rejected'
            )
            INSERT INTO forecasting.quarantine
                (fingerprint, series_id, raw_ts, raw_row, reason, source, dagster_run_id, quarantined_at,
                 file_id, line)
            SELECT md5('q' || i), {key.format("i % :series")}, 'row ' || i,
                   jsonb_build_object('unique_id', {key.format("i % :series")}, 'ds', 'n/a', 'y', 'NaN'),
                   (CAST(:reasons AS text[]))[CASE WHEN i % 100 < 40 THEN 1 WHEN i % 100 < 65 THEN 2
                                                 WHEN i % 100 < 80 THEN 3 WHEN i % 100 < 90 THEN 4
                                                 WHEN i % 100 < 97 THEN 5 ELSE 6 END],
                   'landing', md5('run' || i % 50),
                   CAST(:now AS timestamptz) - (i % 1000) * interval '80 minutes',
                   files.ids[1 + i % array_length(files.ids, 1)], 2 + i / 37
            FROM generate_series(0, :quarantine - 1) AS i, files;
            UPDATE forecasting.landed_files f
            SET rows_quarantined = q.n, rows_accepted = f.rows_read - q.n
            FROM (SELECT file_id, count(*) AS n FROM forecasting.quarantine GROUP BY file_id) AS q
            WHERE q.file_id = f.file_id;
            INSERT INTO forecasting.quarantine_counts (reason, rows)
            SELECT reason, count(*) FROM forecasting.quarantine GROUP BY reason
            ON CONFLICT (reason) DO UPDATE SET rows = EXCLUDED.rows
        """,
        "forecast_accuracy": f"""
            INSERT INTO forecasting.forecast_accuracy
                (series_id, window_key, cutoff, model_name, origin_window, model_version, champion, points,
                 mae, rmse, smape, mase, coverage_80, coverage_95, backtest_mase, dagster_run_id, scored_at)
            SELECT s.id, w.key, CAST(w.key AS timestamp) - interval '1 hour', m.name,
                   to_char(CAST(w.key AS date) - 7, 'YYYY-MM-DD'), m.name || '-' || w.key,
                   abs(hashtext(s.id || w.key)) % 5 = m.n - 1, 24,
                   3 + 4 * {unit.format("s.id || w.key || m.name")},
                   4 + 5 * {unit.format("s.id || w.key || m.name")},
                   8 + 20 * {unit.format("m.name || s.id || w.key")},
                   0.6 + 0.9 * {unit.format("w.key || s.id || m.name")},
                   0.7 + 0.2 * {unit.format("s.id || m.name || w.key")},
                   0.85 + 0.15 * {unit.format("m.name || w.key || s.id")},
                   0.7 + 0.5 * {unit.format("w.key || m.name || s.id")},
                   md5(w.key), CAST(:now AS timestamptz) - (w.n - 1) * interval '7 days' - interval '28 hours'
            FROM (SELECT {key.format("i")} AS id FROM generate_series(0, :series - 1) AS i) AS s
            CROSS JOIN unnest(CAST(:scored AS text[])) WITH ORDINALITY AS w(key, n)
            CROSS JOIN unnest(CAST(:models AS text[])) WITH ORDINALITY AS m(name, n)
        """,
        "resource_stats": """
            INSERT INTO forecasting.resource_stats
                (dagster_run_id, stage, model_name, freq_group, window_key, series_count, wall_seconds,
                 peak_rss_mb, device, gpu_peak_mb, recorded_at)
            SELECT md5(w.key || st.stage || r), st.stage, m.name, 'hourly', w.key, :series,
                   30 + 40 * m.n + 10 * r, 900 + 150 * m.n, CASE WHEN m.name IN ('NHITS', 'TiDE') THEN 'cuda'
                                                                  ELSE 'cpu' END,
                   CASE WHEN m.name IN ('NHITS', 'TiDE') THEN 2400 + 100 * r END,
                   CAST(:now AS timestamptz) - (array_length(CAST(:windows AS text[]), 1) - w.n)
                       * interval '7 days' - interval '29 hours' + r * interval '2 days'
            FROM unnest(CAST(:windows AS text[])) WITH ORDINALITY AS w(key, n)
            CROSS JOIN (VALUES ('tuning'), ('training'), ('backtest')) AS st(stage)
            CROSS JOIN unnest(CAST(:models AS text[])) WITH ORDINALITY AS m(name, n)
            CROSS JOIN generate_series(0, 1) AS r
        """,
        "drift": f"""
            INSERT INTO forecasting.automation_requests
                (request_id, kind, reason, windows, created_at, submitted_at, backfill_id)
            SELECT 'cascade-' || n, 'cascade', 'new data in ' || (n % 5 + 1) || ' cells',
                   ARRAY[(CAST(:windows AS text[]))[array_length(CAST(:windows AS text[]), 1) - n % 4]],
                   CAST(:now AS timestamptz) - n * interval '4 hours',
                   CAST(:now AS timestamptz) - n * interval '4 hours' + interval '30 seconds', md5('b' || n)
            FROM generate_series(1, 40) AS n;
            INSERT INTO forecasting.automation_requests
                (request_id, kind, reason, windows, series_ids, created_at, submitted_at)
            SELECT 'drift-' || w.key, 'drift', 'rolling MASE above threshold', ARRAY[w.key],
                   ARRAY(SELECT {key.format("i")} FROM generate_series(0, :series - 1) AS i
                         WHERE abs(hashtext({key.format("i")} || w.key)) % 67 = 0),
                   CAST(:now AS timestamptz) - (4 - w.n) * interval '7 days' - interval '27 hours',
                   CASE WHEN w.n < 4 THEN CAST(:now AS timestamptz) - (4 - w.n) * interval '7 days'
                                          - interval '27 hours' + interval '1 minute' END
            FROM unnest((CAST(:scored AS text[]))[5:8]) WITH ORDINALITY AS w(key, n);
            INSERT INTO forecasting.drift_events
                (series_id, window_key, rolling_mase, backtest_mase, ratio, threshold, windows_scored,
                 request_id, detected_at)
            SELECT s, r.windows[1], 1.8, 1.0, 1.8, 1.5, 2, r.request_id, r.created_at
            FROM forecasting.automation_requests r CROSS JOIN unnest(r.series_ids) AS s
            WHERE r.kind = 'drift'
        """,
        "cascade_queue": f"""
            INSERT INTO forecasting.cascade_queue (series_id, window_key, request_id, queued_at)
            SELECT {key.format("i")}, (CAST(:windows AS text[]))[array_length(CAST(:windows AS text[]), 1)],
                   NULL, CAST(:now AS timestamptz) - interval '25 minutes'
            FROM generate_series(0, :series - 1) AS i
        """,
        "observations": f"""
            INSERT INTO forecasting.observations
                (series_id, ts, y, window_key, source, dagster_run_id, file_id)
            SELECT {key.format("s")}, t.ts, 100 + 10 * sin(t.h * pi() / 12) + s % 50,
                   to_char(CAST(t.ts AS date) - CAST(extract(dow FROM t.ts) AS integer), 'YYYY-MM-DD'),
                   'landing', md5('ingest' || CAST(CAST(t.ts AS date) AS text)), 1
            FROM generate_series(0, :series - 1) AS s
            CROSS JOIN (SELECT h, CAST(:obs_start AS timestamp) + h * interval '1 hour' AS ts
                        FROM generate_series(0, :hours - 1) AS h) AS t
        """,
    }
    seconds = {}
    for name, sql in statements.items():
        if name == "observations" and observation_hours <= 0:
            continue
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in sql.split(";"):
                conn.execute(text(statement), params)
        seconds[name] = round(time.perf_counter() - started, 1)
    return seconds


class StatementLog:
    """Every SQL statement of the process while `recording`, with its time and collector section."""

    def __init__(self) -> None:
        self.recording = False
        self.statements: list[dict] = []
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def close(self) -> None:
        event.remove(Engine, "before_cursor_execute", self._before)
        event.remove(Engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info.setdefault("metrics_scrape_started", []).append(time.perf_counter())

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        started = conn.info["metrics_scrape_started"].pop()
        if self.recording:
            self.statements.append(
                {
                    "seconds": time.perf_counter() - started,
                    "section": _section(),
                    "sql": statement,
                    "parameters": parameters,
                }
            )


def _section() -> str:
    """The collector section on the call stack (its method is named `_<section>`)."""
    from forecasting_pipeline.monitoring.catalogue import SECTIONS

    frame = sys._getframe()
    while frame is not None:
        name = frame.f_code.co_name.lstrip("_")
        if frame.f_code.co_filename.endswith("collector.py") and name in SECTIONS:
            return name
        frame = frame.f_back
    return "other"


def explain(engine, statement: dict) -> list[str]:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement["sql"], statement["parameters"])
        plan = [row[0] for row in cursor.fetchall()]
        raw.rollback()
        return plan
    finally:
        raw.close()


def frequent_statements(statements: list[dict], top: int = 6) -> list[dict]:
    """The statements run most often, by their first words, with their count and total time."""
    grouped: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in statements:
        grouped[(s["section"], " ".join(s["sql"].split())[:120])].append(s["seconds"])
    ranked = sorted(grouped.items(), key=lambda item: len(item[1]), reverse=True)[:top]
    return [
        {"section": section, "count": len(times), "seconds": round(sum(times), 3), "sql": sql}
        for (section, sql), times in ranked
    ]


def profile_scrape(registry) -> list[str]:
    """The functions one scrape spends its time in (cProfile, by cumulative time)."""
    import cProfile
    import io
    import pstats

    from prometheus_client import generate_latest

    profiler = cProfile.Profile()
    profiler.enable()
    generate_latest(registry)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
    lines = [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return [line.replace(os.getcwd() + "/", "").replace(sys.prefix + "/", "") for line in lines[start:]]


def parse_exposition(body: bytes) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(body.decode()))
    sections = {
        sample.labels["section"]: round(sample.value, 4)
        for family in families
        for sample in family.samples
        if sample.name == "fp_exporter_section_seconds"
    }
    errors = {
        sample.labels["section"]: sample.value
        for family in families
        for sample in family.samples
        if sample.name == "fp_exporter_section_errors_total" and sample.value
    }
    return {
        "bytes": len(body),
        "samples": sum(len(family.samples) for family in families),
        "families_with_samples": sum(1 for family in families if family.samples),
        "sections_s": sections,
        "section_errors": errors,
    }


def table_scans(engine) -> dict[str, dict[str, int]]:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        rows = conn.execute(
            text(
                "SELECT schemaname || '.' || relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), "
                "coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables "
                "WHERE schemaname IN ('public', 'forecasting')"
            )
        ).all()
    return {
        name: {"seq_scan": s, "seq_tup_read": r, "idx_scan": i, "idx_tup_fetch": f}
        for name, s, r, i, f in rows
    }


def scan_delta(before: dict, after: dict, scrapes: int) -> dict[str, dict[str, float]]:
    delta = {}
    for name, counts in after.items():
        moved = {k: (v - before.get(name, {}).get(k, 0)) / scrapes for k, v in counts.items()}
        if any(moved.values()):
            delta[name] = {k: round(v, 1) for k, v in moved.items()}
    return dict(sorted(delta.items()))


def row_counts(engine) -> dict[str, int]:
    tables = (
        "forecasting.series",
        "forecasting.landed_files",
        "forecasting.quarantine",
        "forecasting.quarantine_counts",
        "forecasting.forecast_accuracy",
        "forecasting.resource_stats",
        "forecasting.drift_events",
        "forecasting.automation_requests",
        "forecasting.cascade_queue",
        "forecasting.observations",
        "public.runs",
        "public.event_logs",
        "public.asset_event_tags",
        "public.asset_check_executions",
        "public.dynamic_partitions",
    )
    with engine.connect() as conn:
        counts = {name: conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one() for name in tables}
        counts["event_logs by type"] = dict(
            conn.execute(
                text("SELECT dagster_event_type, count(*) FROM event_logs GROUP BY 1 ORDER BY 2 DESC")
            ).all()
        )
        counts["runs by status"] = dict(
            conn.execute(text("SELECT status, count(*) FROM runs GROUP BY 1 ORDER BY 2 DESC")).all()
        )
        counts["event_logs_bytes"] = conn.execute(
            text("SELECT pg_total_relation_size('event_logs')")
        ).scalar_one()
        counts["database_bytes"] = conn.execute(
            text("SELECT pg_database_size(current_database())")
        ).scalar_one()
    return counts


def code_state() -> dict:
    """The commit measured, and the package files that differed from it."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout

    changed = git("status", "--porcelain", "--", "forecasting_pipeline", "sql").splitlines()
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted": [line[3:] for line in changed],
    }


def timed(call):
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def seed(instance, engine, series: list[str], windows: list[str], observation_hours: int):
    """The deployment's Dagster state and domain rows; returns the runs and seconds per part."""
    now = time.time()
    rng = random.Random(11)
    seconds: dict[str, object] = {}
    _, seconds["dynamic_partitions"] = timed(lambda: instance.add_dynamic_partitions("series", series))
    runs = plan_runs(series, windows, now, rng)
    writer = EventWriter(instance, engine)
    started = time.perf_counter()
    for run in runs:
        writer.run(run, rng)
    writer.finish()
    seconds["dagster_runs_and_events"] = time.perf_counter() - started
    cycle = next(run for run in runs if run.job == "publish_forecasts" and run.series == series)
    writer.check_copy(cycle, "predictions", cycle.windows[0], series[len(series) // 2])
    seconds["domain"] = seed_domain(
        engine, len(series), windows, datetime.fromtimestamp(now, UTC), observation_hours
    )
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    seconds["vacuum_analyze"] = time.perf_counter() - started
    rounded = {k: v if isinstance(v, dict) else round(v, 1) for k, v in seconds.items()}
    return writer, runs, rounded


def scrapes(registry, engine, writer: EventWriter, in_progress: Run, new_series: str) -> dict:
    """Cold, warm, HTTP and profiled scrapes, then one after a run and one after a new series,
    with the warm scrape's SQL statements and table scans."""
    from prometheus_client import generate_latest

    from forecasting_pipeline.monitoring.exporter import serving

    statements = StatementLog()
    statements.recording = True
    cold_body, cold_s = timed(lambda: generate_latest(registry))
    cold_statements, statements.statements = statements.statements, []
    engine.dispose()  # pooled sessions flush their table statistics when they end
    time.sleep(1.5)
    scans_before = table_scans(engine)
    warm = []
    for index in range(WARM_SCRAPES):
        warm.append(timed(lambda: generate_latest(registry)))
        if index == 0:
            warm_statements, statements.recording = statements.statements, False
    engine.dispose()
    time.sleep(1.5)
    scans = scan_delta(scans_before, table_scans(engine), WARM_SCRAPES)
    with serving(registry, "127.0.0.1", 0) as port:
        url = f"http://127.0.0.1:{port}/metrics"
        http_body, http_s = timed(lambda: urllib.request.urlopen(url, timeout=600).read())
    profile = profile_scrape(registry)
    writer.resume(in_progress, random.Random(5))
    writer.finish()
    after_body, after_s = timed(lambda: generate_latest(registry))
    # A new series lands: the sensor adds its partition, ingestion registers it and its first cell.
    writer.instance.add_dynamic_partitions("series", [new_series])
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO forecasting.series "
                "(series_id, dataset_id, freq, first_ts, last_ts, partition_key) "
                "SELECT :id, dataset_id, freq, last_ts - interval '167 hours', last_ts, :id "
                "FROM forecasting.series LIMIT 1"
            ),
            {"id": new_series},
        )
    arrival = Run("ingest_observations", time.time() - 60, 50, in_progress.windows, [new_series])
    writer.run(arrival, random.Random(6))
    writer.finish()
    new_body, new_s = timed(lambda: generate_latest(registry))
    statements.close()

    slowest = sorted(warm_statements, key=lambda s: s["seconds"], reverse=True)
    by_section: dict[str, dict[str, float]] = defaultdict(lambda: {"statements": 0, "seconds": 0.0})
    for s in warm_statements:
        by_section[s["section"]]["statements"] += 1
        by_section[s["section"]]["seconds"] += s["seconds"]
    warm_parsed = [parse_exposition(body) for body, _ in warm]
    warm_s = [seconds for _, seconds in warm]
    exposition = parse_exposition(cold_body)

    def per_section(pick) -> dict[str, float]:
        return {
            name: round(pick(p["sections_s"][name] for p in warm_parsed), 4)
            for name in exposition["sections_s"]
        }

    return {
        "cold_scrape": {
            "wall_s": round(cold_s, 2),
            "sections_s": exposition["sections_s"],
            "sql_statements": len(cold_statements),
        },
        "warm_scrapes": {
            "count": WARM_SCRAPES,
            "wall_s": [round(s, 3) for s in warm_s],
            "median_s": round(statistics.median(warm_s), 3),
            "max_s": round(max(warm_s), 3),
            "sections_median_s": per_section(statistics.median),
            "sections_max_s": per_section(max),
            "section_errors": warm_parsed[-1]["section_errors"],
        },
        "http_scrape": {
            "wall_s": round(http_s, 3),
            "bytes": len(http_body),
            "sections_s": parse_exposition(http_body)["sections_s"],
        },
        "scrape_after_run": {
            "what": f"the run in progress materialized its {len(in_progress.series or ()):,} cells since the "
            "previous scrape",
            "wall_s": round(after_s, 3),
            "sections_s": parse_exposition(after_body)["sections_s"],
        },
        "scrape_after_new_series": {
            "what": "a new series landed since the previous scrape: its partition added, its first cell "
            "ingested (the series dimension changed, so the status cache of an asset with new events no "
            "longer matches its partitions definition and is rebuilt)",
            "wall_s": round(new_s, 3),
            "sections_s": parse_exposition(new_body)["sections_s"],
        },
        "exposition": {k: exposition[k] for k in ("bytes", "samples", "families_with_samples")},
        "warm_scrape_sql": {
            "statements": len(warm_statements),
            "by_section": {
                k: {"statements": v["statements"], "seconds": round(v["seconds"], 3)}
                for k, v in sorted(by_section.items())
            },
            "slowest": [
                {
                    "section": s["section"],
                    "seconds": round(s["seconds"], 4),
                    "sql": " ".join(s["sql"].split())[:300],
                }
                for s in slowest[:8]
            ],
            "most_frequent": frequent_statements(warm_statements),
            "explain_analyze": [
                {
                    "section": s["section"],
                    "seconds": round(s["seconds"], 3),
                    "sql": " ".join(s["sql"].split())[:1500],
                    "plan": explain(engine, s),
                }
                for s in slowest[:3]
                if s["seconds"] >= SLOW_STATEMENT_S
                and s["sql"].lstrip().upper().startswith(("SELECT", "WITH"))
            ],
        },
        "table_scans_per_warm_scrape": scans,
        "warm_scrape_profile": profile,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--observation-hours", type=int, default=336, help="0: no observations")
    args = parser.parse_args()
    today = datetime.now(UTC).date()
    current = today - timedelta(days=(today.weekday() + 1) % 7)  # the window in progress (a Sunday)
    windows = [(current - timedelta(weeks=k)).isoformat() for k in range(COMPLETE_WINDOWS, 0, -1)]
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with fresh_database() as url:
        configure(url, FP_PARTITION_START=windows[0])
        from dagster import DagsterInstance

        from forecasting_pipeline.bootstrap import prepare_deployment
        from forecasting_pipeline.monitoring.exporter import build_registry
        from forecasting_pipeline.resources.database import engine_for

        deployment = prepare_deployment()
        instance = DagsterInstance.get()
        engine = engine_for(deployment.database_url)
        series = [series_key(i) for i in range(args.series)]
        writer, runs, seed_s = seed(instance, engine, series, windows, args.observation_hours)
        seeded = row_counts(engine)
        with engine.connect() as conn:
            postgres = conn.execute(text("SHOW server_version")).scalar_one().split()[0]
        registry, registry_s = timed(
            lambda: build_registry(deployment.settings, deployment.database_url, instance)
        )
        in_progress = next(run for run in runs if run.status == "STARTED")
        measured = scrapes(registry, engine, writer, in_progress, series_key(args.series))
        instance.dispose()
    result = {
        "what": f"`forecasting-pipeline metrics` scraping a weekly deployment of {args.series:,} hourly "
        f"series: {len(runs)} Dagster runs, every cell-level asset over {CELL_WINDOWS} windows, "
        f"{SCORED_WINDOWS} scored windows × {len(MODELS)} models, the newest window's {args.series:,} cells "
        "in the cascade queue",
        "date": datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "postgres": postgres,
        "code": code_state(),
        "windows": {
            "complete": windows,
            "cell_level": windows[-CELL_WINDOWS:],
            "scored": windows[-SCORED_WINDOWS:],
        },
        "seeded": seeded,
        "seed_s": seed_s,
        "registry_build_s": round(registry_s, 2),
        **measured,
        "peak_rss_mb": round(peak_rss_mb()),
    }
    write_result(f"metrics_scrape_{args.series}", result)
    print()
    print(summary(result, args.series))


def summary(result: dict, series: int) -> str:
    """One paragraph for the README."""
    warm, seeded, exposition = result["warm_scrapes"], result["seeded"], result["exposition"]
    sections = warm["sections_median_s"]
    slowest, slowest_s = max(sections.items(), key=lambda item: item[1])
    others_ms = 1000 * max(v for k, v in sections.items() if k != slowest)
    why = " (Dagster's partition status cache and the stale-partition probe)" if slowest == "assets" else ""
    observations = seeded["forecasting.observations"]
    untouched = "forecasting.observations" not in result["table_scans_per_warm_scrape"]
    return (
        f"At {series:,} series — a weekly deployment with {seeded['public.runs']:,} Dagster runs, "
        f"{seeded['public.event_logs']:,} event-log rows, {seeded['forecasting.forecast_accuracy']:,} "
        f"accuracy rows, {seeded['forecasting.quarantine']:,} quarantined rows and the newest window's "
        f"{seeded['forecasting.cascade_queue']:,} cells queued for the cascade — a scrape of "
        f"`forecasting-pipeline metrics` takes {warm['median_s']:.1f} s (median of {warm['count']}, max "
        f"{warm['max_s']:.1f} s; {result['http_scrape']['wall_s']:.1f} s over HTTP) and serves "
        f"{exposition['samples']:,} samples ({exposition['bytes'] / 1024:.0f} KiB). The `{slowest}` section "
        f"takes {slowest_s:.1f} s of it{why}; every other section stays under {others_ms:.0f} ms"
        + (f", and no scrape reads the {observations:,} observations" if untouched and observations else "")
        + f". The first scrape after the exporter starts takes {result['cold_scrape']['wall_s']:.0f} s while "
        f"Dagster builds that cache; loading the definitions takes {result['registry_build_s']:.1f} s. "
        f"({result['cpus']} CPUs, PostgreSQL {result['postgres']}; `benchmarks/metrics_scrape.py`, "
        f"`benchmarks/results/metrics_scrape_{series}.json`.)"
    )


if __name__ == "__main__":
    main()
