"""`new_data_sensor`: what lands in the landing folder (or the SQL source) becomes runs.

The cursor is the landed-file manifest in PostgreSQL, not a timestamp in the sensor: a tick
stats the folder, asks the database which paths are new or moved since a tick last looked
(`landed_paths`), and hashes and stages only those through the same front door as `ingest`.
A file whose content is already in the manifest does nothing, so a restarted daemon neither
repeats nor misses a file. The runs requested are the changed series × window cells staged and
not yet accepted, as few partition-range rectangles as they fit in; their run keys name the
cells and the staged files, so a tick that sees the same pending work again asks for nothing
new, and a run that failed is reported, never retried in a loop. A file that cannot be read is
set aside and reported as a failed `landed_files_readable` check with its reason.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from dagster import (
    AddDynamicPartitionsRequest,
    AssetCheckEvaluation,
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from sqlalchemy import Connection

from forecasting_pipeline.automation.jobs import ingest_job
from forecasting_pipeline.automation.planning import plan_rectangles
from forecasting_pipeline.calendar import load_calendar, save_calendar
from forecasting_pipeline.ingestion.reader import file_format
from forecasting_pipeline.ingestion.staging import FileOutcome, StagedBatch, move_rejected, stage_landed_files
from forecasting_pipeline.ingestion.validation import ColumnRoles
from forecasting_pipeline.partitions import date_partitions, loaded_calendar, series_date_range
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.schemas import SERIES_DIMENSION
from forecasting_pipeline.settings import Settings, load_settings
from forecasting_pipeline.storage.automation import remember_paths, unseen_paths
from forecasting_pipeline.storage.staging import pending_file_ids

READABLE_CHECK = "landed_files_readable"
TRIGGER_TAG = "forecasting-pipeline/trigger"
REASON_TAG = "forecasting-pipeline/reason"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
_LISTING_SCHEMA = {"path": pl.Utf8, "size_bytes": pl.Int64, "modified_ns": pl.Int64}


def scan_landing(landing_dir: Path) -> pl.DataFrame:
    """path, size_bytes, modified_ns of every landed data file (one `scandir`, no hashing)."""
    if not landing_dir.is_dir():
        return pl.DataFrame(schema=_LISTING_SCHEMA)
    paths, sizes, times = [], [], []
    with os.scandir(landing_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file() or file_format(Path(entry.name)) is None:
                continue
            stat = entry.stat()
            paths.append(entry.path)
            sizes.append(stat.st_size)
            times.append(stat.st_mtime_ns)
    return pl.DataFrame({"path": paths, "size_bytes": sizes, "modified_ns": times}, schema=_LISTING_SCHEMA)


def snapshot_sql_source(settings: Settings) -> Path | None:
    """Land the configured SQL source as a file; unchanged content lands as an unchanged file."""
    if not (settings.source_url and settings.source_query):
        return None
    from forecasting_pipeline.operations import land_sql

    return land_sql(settings.source_url, settings.source_query, settings.landing_dir)


@dataclass(frozen=True)
class TickPlan:
    """What one evaluation decided: the batch it staged and the runs it asks for."""

    batch: StagedBatch
    files_waiting: int
    new_series_keys: list[str]
    run_requests: list[RunRequest]
    cells_waiting_for_windows: int
    calendar_moved: bool


def _seen_rows(listing: pl.DataFrame, outcomes: list[FileOutcome]) -> pl.DataFrame:
    """What each looked-at path turned out to be (rejected files move away, so not them)."""
    outcome_frame = pl.DataFrame(
        {
            "path": [str(o.path) for o in outcomes if o.status != "rejected"],
            "file_id": [o.file_id for o in outcomes if o.status != "rejected"],
        },
        schema={"path": pl.Utf8, "file_id": pl.Int64},
    )
    return listing.join(outcome_frame, on="path").with_columns(
        pl.lit(None, dtype=pl.Utf8).alias("content_hash")
    )


def plan_tick(conn: Connection, settings: Settings, existing_keys: list[str], sensor_name: str) -> TickPlan:
    """Stage what landed since the last tick and plan the runs of every pending cell."""
    snapshot_sql_source(settings)
    listing = unseen_paths(conn, scan_landing(settings.landing_dir)).sort("modified_ns", "path")
    chosen = listing.head(settings.sensor_max_files)
    calendar = load_calendar(settings)
    batch = stage_landed_files(
        conn,
        [Path(p) for p in chosen["path"].to_list()],
        roles=ColumnRoles(),
        settings=settings,
        calendar=calendar,
    )
    remember_paths(conn, _seen_rows(chosen, batch.files))
    calendar_moved = not batch.calendar.same_windows(calendar) or (
        not calendar.persisted and batch.calendar.end != calendar.end
    )
    if calendar_moved:
        batch.calendar = save_calendar(settings, batch.calendar)

    windows = date_partitions.get_partition_keys()
    cells = batch.cells.filter(pl.col("window_key").is_in(windows))
    new_keys = sorted(set(cells["partition_key"].to_list()) - set(existing_keys))
    order = existing_keys + new_keys
    files = ",".join(map(str, pending_file_ids(conn, batch.batch_id)))
    requests = []
    for rectangle in plan_rectangles(cells, order, windows):
        start, _ = series_date_range(rectangle.first_window, rectangle.series_keys)
        _, end = series_date_range(rectangle.last_window, rectangle.series_keys)
        key = hashlib.sha256(f"{start}..{end}@{files}".encode()).hexdigest()[:20]
        reason = (
            f"new or changed observations in {len(rectangle.series_keys)} series × "
            f"{rectangle.first_window}..{rectangle.last_window}"
        )
        requests.append(
            RunRequest(
                run_key=f"ingest-{key}",
                job_name=ingest_job.name,
                tags={
                    RANGE_START_TAG: start,
                    RANGE_END_TAG: end,
                    TRIGGER_TAG: sensor_name,
                    REASON_TAG: reason,
                },
            )
        )
    return TickPlan(
        batch=batch,
        files_waiting=listing.height - chosen.height,
        new_series_keys=new_keys,
        run_requests=requests,
        cells_waiting_for_windows=batch.cells.height - cells.height,
        calendar_moved=calendar_moved and not batch.calendar.same_windows(loaded_calendar),
    )


def _rejected_file_checks(batch: StagedBatch) -> list[AssetCheckEvaluation]:
    rejected = [o for o in batch.files if o.status == "rejected"]
    if not rejected:
        return []
    return [
        AssetCheckEvaluation(
            asset_key=AssetKey("raw_observations"),
            check_name=READABLE_CHECK,
            passed=False,
            metadata={
                "files": len(rejected),
                "reasons": "\n".join(f"{o.path.name}: {o.message}" for o in rejected[:50]),
                "set_aside_in": str(batch.rejected_moves[0][1].parent) if batch.rejected_moves else "",
            },
        )
    ]


def _describe(plan: TickPlan, seconds: float) -> str:
    staged = sum(1 for f in plan.batch.files if f.status in ("staged", "held"))
    parts = [
        f"{len(plan.batch.files)} files looked at ({staged} staged) in {seconds:.2f}s",
        f"{plan.batch.cells.height} pending cells in {len(plan.run_requests)} runs",
    ]
    if plan.new_series_keys:
        parts.append(f"{len(plan.new_series_keys)} new series")
    if plan.files_waiting:
        parts.append(f"{plan.files_waiting} files wait for the next tick")
    if plan.cells_waiting_for_windows:
        parts.append(
            f"{plan.cells_waiting_for_windows} cells lie in windows this code location does not have"
        )
    if plan.calendar_moved:
        parts.append("the date calendar grew: reload the code location so the new windows exist")
    return "; ".join(parts)


def evaluate_new_data(
    context: SensorEvaluationContext, database: DatabaseResource
) -> SensorResult | SkipReason:
    """One tick: stage, remember, and request (the body of `new_data_sensor`)."""
    started = time.perf_counter()
    settings = load_settings()
    existing = list(context.instance.get_dynamic_partitions(SERIES_DIMENSION))
    with database.transaction() as conn:
        plan = plan_tick(
            conn, settings, existing, context.sensor_name if context.sensor_name else "new_data_sensor"
        )
    move_rejected(plan.batch)
    message = _describe(plan, time.perf_counter() - started)
    context.log.info(message)
    checks = _rejected_file_checks(plan.batch)
    if not (plan.run_requests or plan.new_series_keys or checks):
        return SkipReason(message)
    return SensorResult(
        run_requests=plan.run_requests,
        dynamic_partitions_requests=[
            AddDynamicPartitionsRequest(
                partitions_def_name=SERIES_DIMENSION, partition_keys=plan.new_series_keys
            )
        ]
        if plan.new_series_keys
        else [],
        asset_events=checks,
    )


def _default_status() -> DefaultSensorStatus:
    return DefaultSensorStatus.RUNNING if load_settings().automation_on else DefaultSensorStatus.STOPPED


@sensor(
    name="new_data_sensor",
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=_default_status(),
    description="Stages new or changed landed files (and the SQL source) and ingests exactly the cells "
    "whose data changed; adds new series as partitions.",
)
def new_data_sensor(
    context: SensorEvaluationContext, database: DatabaseResource
) -> SensorResult | SkipReason:
    return evaluate_new_data(context, database)
