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
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from dagster import (
    AddDynamicPartitionsRequest,
    AssetCheckEvaluation,
    AssetKey,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from forecasting_pipeline.automation.jobs import ingest_job
from forecasting_pipeline.automation.planning import plan_rectangles
from forecasting_pipeline.automation.switch import SENSOR_STATUS
from forecasting_pipeline.automation.tags import RANGE_END_TAG, RANGE_START_TAG, REASON_TAG, TRIGGER_TAG
from forecasting_pipeline.calendar import load_calendar, save_calendar
from forecasting_pipeline.ingestion.reader import file_format
from forecasting_pipeline.ingestion.staging import FileOutcome, StagedBatch, move_rejected, stage_landed_files
from forecasting_pipeline.ingestion.validation import ColumnRoles
from forecasting_pipeline.partitions import date_partitions, loaded_calendar, series_date_range
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.schemas import SERIES_DIMENSION
from forecasting_pipeline.settings import Settings, load_settings
from forecasting_pipeline.storage.automation import remember_paths, unseen_paths
from forecasting_pipeline.storage.staging import pending_cells, pending_file_ids

READABLE_CHECK = "landed_files_readable"
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


# Files staged together are checked together (one batch); a tick stages batches until its time
# budget is spent, committing each, so a slow folder makes progress over several ticks. The
# budget keeps a tick (one more batch and the run planning included) under 10 s, well inside
# the daemon's 60 s sensor timeout, so other sensors and the UI's tick history stay responsive.
FILES_PER_BATCH = 50
TICK_BUDGET_SECONDS = 6.0


@dataclass
class TickPlan:
    """What one evaluation staged and the runs it asks for."""

    batches: list[StagedBatch] = field(default_factory=list)
    files_waiting: int = 0
    pending_cells: int = 0
    new_series_keys: list[str] = field(default_factory=list)
    run_requests: list[RunRequest] = field(default_factory=list)
    cells_waiting_for_windows: int = 0
    calendar_moved: bool = False

    @property
    def files(self) -> list[FileOutcome]:
        return [outcome for batch in self.batches for outcome in batch.files]


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


def _stage_batches(database: DatabaseResource, settings: Settings, plan: TickPlan, deadline: float) -> None:
    """Stage the unseen files, oldest first, one committed batch at a time until `deadline`."""
    with database.transaction() as conn:
        listing = unseen_paths(conn, scan_landing(settings.landing_dir)).sort("modified_ns", "path")
    chosen = listing.head(settings.sensor_max_files)
    calendar = load_calendar(settings)
    staged = 0
    while True:
        chunk = chosen.slice(staged, FILES_PER_BATCH)
        with database.transaction() as conn:
            batch = stage_landed_files(
                conn,
                [Path(p) for p in chunk["path"].to_list()],
                roles=ColumnRoles(),
                settings=settings,
                calendar=calendar,
                plan_cells=False,
            )
            remember_paths(conn, _seen_rows(chunk, batch.files))
        move_rejected(batch)
        plan.batches.append(batch)
        if not batch.calendar.same_windows(calendar) or (
            not calendar.persisted and batch.calendar.end != calendar.end
        ):
            calendar = save_calendar(settings, batch.calendar)
            plan.calendar_moved = not calendar.same_windows(loaded_calendar)
        staged += chunk.height
        if staged >= chosen.height or time.perf_counter() > deadline:
            break
    plan.files_waiting = listing.height - staged


def _plan_runs(
    database: DatabaseResource, plan: TickPlan, existing_keys: list[str], sensor_name: str
) -> None:
    """Runs for every pending cell (this tick's and any an earlier tick left), as rectangles."""
    batch_ids = [batch.batch_id for batch in plan.batches]
    with database.transaction() as conn:
        pending = pending_cells(conn, plan.batches[-1].calendar, batch_ids)
        files = ",".join(map(str, pending_file_ids(conn, batch_ids)))
    plan.pending_cells = pending.height
    windows = date_partitions.get_partition_keys()
    cells = pending.filter(pl.col("window_key").is_in(windows))
    plan.cells_waiting_for_windows = pending.height - cells.height
    plan.new_series_keys = sorted(set(cells["partition_key"].to_list()) - set(existing_keys))
    order = existing_keys + plan.new_series_keys
    for rectangle in plan_rectangles(cells, order, windows):
        start, _ = series_date_range(rectangle.first_window, rectangle.series_keys)
        _, end = series_date_range(rectangle.last_window, rectangle.series_keys)
        # Named by its cells and the files waiting for them: the same pending work asks again
        # under the same key (the daemon skips it), new files under a new one.
        key = hashlib.sha256(f"{start}..{end}@{files}".encode()).hexdigest()[:20]
        reason = (
            f"new or changed observations in {len(rectangle.series_keys)} series × "
            f"{rectangle.first_window}..{rectangle.last_window}"
        )
        plan.run_requests.append(
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


def plan_tick(
    database: DatabaseResource, settings: Settings, existing_keys: list[str], sensor_name: str
) -> TickPlan:
    """Stage what landed since the last tick and plan the runs of every pending cell."""
    plan = TickPlan()
    snapshot_sql_source(settings)
    _stage_batches(database, settings, plan, time.perf_counter() + TICK_BUDGET_SECONDS)
    _plan_runs(database, plan, existing_keys, sensor_name)
    return plan


def _rejected_file_checks(plan: TickPlan) -> list[AssetCheckEvaluation]:
    rejected = [o for o in plan.files if o.status == "rejected"]
    if not rejected:
        return []
    moved_to = [target.parent for batch in plan.batches for _, target in batch.rejected_moves]
    return [
        AssetCheckEvaluation(
            asset_key=AssetKey("raw_observations"),
            check_name=READABLE_CHECK,
            passed=False,
            metadata={
                "files": len(rejected),
                "reasons": "\n".join(f"{o.path.name}: {o.message}" for o in rejected[:50]),
                "set_aside_in": str(moved_to[0]) if moved_to else "",
            },
        )
    ]


def _describe(plan: TickPlan, seconds: float) -> str:
    staged = sum(1 for f in plan.files if f.status in ("staged", "held"))
    parts = [
        f"{len(plan.files)} files looked at ({staged} staged) in {seconds:.2f}s",
        f"{plan.pending_cells} pending cells in {len(plan.run_requests)} runs",
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
    existing = list(context.instance.get_dynamic_partitions(SERIES_DIMENSION))
    plan = plan_tick(database, load_settings(), existing, context.sensor_name or "new_data_sensor")
    message = _describe(plan, time.perf_counter() - started)
    context.log.info(message)
    checks = _rejected_file_checks(plan)
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


@sensor(
    name="new_data_sensor",
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=SENSOR_STATUS,
    description="Stages new or changed landed files (and the SQL source) and ingests exactly the cells "
    "whose data changed; adds new series as partitions.",
)
def new_data_sensor(
    context: SensorEvaluationContext, database: DatabaseResource
) -> SensorResult | SkipReason:
    return evaluate_new_data(context, database)
