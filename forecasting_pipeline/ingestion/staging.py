"""The front door: read each landed file once, validate it, stage it, and say what changed.

For every file: its manifest entry (size, content hash, rows read / accepted / quarantined,
time span, series, status); an unchanged file is recognized by its hash and does nothing; an
unreadable one is recorded with its reason and moved aside so it never blocks another file.
Valid rows are COPYed into the staging area, refused rows into quarantine with file and line.
The whole batch is then checked as landed (Great Expectations); a batch failing a blocking
check is held instead of accepted. What comes out is the set of series × window cells whose
data is new or different: only those cells run.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import polars as pl
from sqlalchemy import Connection

from forecasting_pipeline.calendar import DateCalendar, plan_calendar, window_keys
from forecasting_pipeline.datasets import BUNDLED_DATASETS
from forecasting_pipeline.ingestion.reader import ReadResult, read_landed_file
from forecasting_pipeline.ingestion.roots import within_roots
from forecasting_pipeline.ingestion.validation import (
    ColumnRoles,
    ValidatedRows,
    future_limit,
    validate_rows,
)
from forecasting_pipeline.modeling.frequency import grid_flags, infer_frequencies
from forecasting_pipeline.schemas import DS, SOURCE_ROW, UNIQUE_ID
from forecasting_pipeline.series_keys import partition_keys
from forecasting_pipeline.settings import INGEST_ROOTS_VAR, Settings
from forecasting_pipeline.storage.catalog import (
    DatasetRecord,
    observation_timestamps,
    register_dataset,
    register_series,
    stored_frequencies,
)
from forecasting_pipeline.storage.staging import (
    add_landed_file,
    find_landed_file,
    hold_files,
    pending_cells,
    quarantine_rows,
    set_file_warnings,
    stage_rows,
    store_quality_results,
    update_landed_file,
)

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileOutcome:
    path: Path
    status: str  # staged | unchanged | rejected | held
    message: str
    file_id: int | None = None
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    series: int = 0
    warnings: tuple[str, ...] = ()


@dataclass
class StagedBatch:
    batch_id: str
    files: list[FileOutcome]
    calendar: DateCalendar
    new_series: list[str] = field(default_factory=list)
    # series_id, partition_key, window_key of every cell with new or different data
    cells: pl.DataFrame = field(default_factory=lambda: pl.DataFrame())
    quality: list = field(default_factory=list)  # ExpectationOutcome of the batch
    held: bool = False
    rejected_moves: list[tuple[Path, Path]] = field(default_factory=list)


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _dataset_record(path: Path, roles: ColumnRoles) -> DatasetRecord:
    dataset_id = path.name.split(".", 1)[0]
    bundled = BUNDLED_DATASETS.get(dataset_id)
    if bundled:
        return DatasetRecord(
            dataset_id, bundled.description, bundled.source, bundled.licence, bundled.future_drivers
        )
    return DatasetRecord(dataset_id, f"landed file {path.name}", str(path), "unknown", roles.future_drivers)


def _ragged_as_refused(read: ReadResult) -> pl.DataFrame:
    return read.ragged.select(
        pl.col(SOURCE_ROW),
        pl.lit(None, dtype=pl.Utf8).alias(UNIQUE_ID),
        pl.lit(None, dtype=pl.Utf8).alias("raw_ts"),
        pl.struct(pl.col("raw_line")).struct.json_encode().alias("raw_row"),
        pl.col("reason"),
    )


@dataclass
class _Accumulated:
    """What the batch-level steps need from each staged file, kept narrow to bound memory."""

    spans: list[pl.DataFrame] = field(default_factory=list)
    timestamps: list[pl.DataFrame] = field(default_factory=list)
    as_landed: list[pl.DataFrame] = field(default_factory=list)
    file_ids: list[int] = field(default_factory=list)


def _stage_file(
    conn: Connection,
    path: Path,
    roles: ColumnRoles,
    settings: Settings,
    calendar: DateCalendar,
    batch_id: str,
    accumulated: _Accumulated,
    roots: Sequence[Path],
) -> FileOutcome:
    if not within_roots(path, roots):
        # Not even hashed: reading it would put its content in the manifest's reach and, row by
        # row, in quarantine. Where it leads is left out; the UI shows the reason to everyone.
        return FileOutcome(
            path,
            "rejected",
            f"a link that leads outside the folders ingestion may read ({INGEST_ROOTS_VAR}): not read",
        )
    try:
        stat = path.stat()
        digest = content_hash(path)
    except OSError as exc:
        return FileOutcome(path, "rejected", f"cannot read {path}: {exc.strerror or exc}")
    known = find_landed_file(conn, digest)
    if known is not None:
        return FileOutcome(
            path,
            "unchanged",
            f"same content as landed file #{known.file_id} ({known.status}): nothing to do",
            file_id=known.file_id,
        )
    entry = {
        "path": str(path),
        "file_name": path.name,
        "size_bytes": stat.st_size,
        "modified_at": datetime.fromtimestamp(stat.st_mtime),
        "content_hash": digest,
        "column_mapping": roles.as_json(),
        "batch_id": batch_id,
    }
    read = read_landed_file(path)
    if read.rejected_reason is not None:
        file_id = add_landed_file(
            conn,
            {**entry, "file_format": read.file_format, "status": "rejected", "reason": read.rejected_reason},
        )
        return FileOutcome(path, "rejected", read.rejected_reason, file_id=file_id)

    placeable_until = (
        datetime.combine(calendar.end, datetime.min.time()) if calendar.pinned and calendar.end else None
    )
    checked: ValidatedRows = validate_rows(
        read.rows,
        roles,
        not_after=future_limit(settings.future_tolerance_hours),
        placeable_until=placeable_until,
    )
    refused = pl.concat([checked.quarantined, _ragged_as_refused(read)], how="vertical_relaxed")
    valid = checked.valid
    file_id = add_landed_file(conn, {**entry, "file_format": read.file_format, "status": "staged"})
    stage_rows(conn, file_id, valid, checked.drivers)
    quarantine_rows(conn, refused, file_id=file_id, source=path.name, content_hash=digest)
    span = valid.select(
        pl.col(DS).min().alias("first_ts"), pl.col(DS).max().alias("last_ts"), pl.col(UNIQUE_ID).n_unique()
    ).row(0)
    series_ids = valid[UNIQUE_ID].unique().sort().to_list()
    update_landed_file(
        conn,
        file_id,
        rows_read=read.rows_read,
        rows_accepted=valid.height,
        rows_quarantined=refused.height,
        first_ts=span[0],
        last_ts=span[1],
        series_count=len(series_ids),
        series_ids=series_ids,
        # A file with no usable row has nothing waiting: it is done (unless its batch is held).
        status="staged" if valid.height else "ingested",
    )
    if checked.warnings:
        set_file_warnings(conn, file_id, checked.warnings)

    dataset = _dataset_record(path, roles)
    register_dataset(conn, dataset)
    attributes = checked.attributes
    attribute_json = (
        pl.struct([c for c in attributes.columns if c != UNIQUE_ID]).struct.json_encode()
        if attributes.width > 1
        else pl.lit("{}")
    )
    accumulated.spans.append(
        valid.group_by(UNIQUE_ID)
        .agg(pl.col(DS).min().alias("first_ts"), pl.col(DS).max().alias("last_ts"))
        .join(attributes.select(UNIQUE_ID, attribute_json.alias("attributes")), on=UNIQUE_ID, how="left")
        .with_columns(pl.lit(dataset.dataset_id).alias("dataset_id"))
    )
    accumulated.timestamps.append(valid.select(UNIQUE_ID, DS))
    accumulated.as_landed.append(checked.as_landed.with_columns(pl.lit(path.name).alias("file")))
    if read.ragged.height:
        accumulated.as_landed.append(
            read.ragged.select(
                pl.col(SOURCE_ROW),
                pl.lit(path.name).alias("file"),
            )
        )
    accumulated.file_ids.append(file_id)
    return FileOutcome(
        path,
        "staged",
        f"staged {valid.height} of {read.rows_read} rows ({refused.height} quarantined)",
        file_id=file_id,
        rows_read=read.rows_read,
        rows_accepted=valid.height,
        rows_quarantined=refused.height,
        series=len(series_ids),
        warnings=tuple(checked.warnings),
    )


def _register_series(conn: Connection, accumulated: _Accumulated) -> tuple[list[str], pl.DataFrame]:
    """Register the batch's series in bulk, inferring the frequency of those without one."""
    spans = (
        pl.concat(accumulated.spans, how="vertical_relaxed")
        .group_by(UNIQUE_ID)
        .agg(
            pl.col("first_ts").min(),
            pl.col("last_ts").max(),
            pl.col("dataset_id").last(),
            pl.col("attributes").drop_nulls().last(),
        )
    )
    ids = spans[UNIQUE_ID].to_list()
    known = stored_frequencies(conn, ids)
    known_without = set(known.filter(pl.col("freq").is_null())[UNIQUE_ID].to_list())
    unknown = set(ids) - set(known[UNIQUE_ID].to_list()) | known_without
    timestamps = pl.concat(accumulated.timestamps).filter(pl.col(UNIQUE_ID).is_in(list(unknown)))
    if known_without:
        timestamps = pl.concat(
            [
                timestamps.with_columns(pl.col(DS).cast(pl.Datetime("us"))),
                observation_timestamps(conn, sorted(known_without)),
            ]
        )
    inferred = (
        infer_frequencies(timestamps)
        if timestamps.height
        else pl.DataFrame(schema={UNIQUE_ID: pl.Utf8, "freq": pl.Utf8, "freq_reason": pl.Utf8})
    )
    records = spans.join(inferred.select(UNIQUE_ID, "freq", "freq_reason"), on=UNIQUE_ID, how="left").select(
        pl.col(UNIQUE_ID).alias("series_id"),
        partition_keys(spans[UNIQUE_ID]).alias("partition_key"),
        pl.col("dataset_id"),
        pl.col("freq"),
        pl.col("freq_reason"),
        pl.col("first_ts"),
        pl.col("last_ts"),
        pl.col("attributes").fill_null("{}"),
    )
    new_ids = register_series(conn, records)
    frequencies = pl.concat(
        [known.filter(pl.col("freq").is_not_null()), inferred.select(UNIQUE_ID, "freq")],
        how="vertical_relaxed",
    ).unique(UNIQUE_ID, keep="first")
    return new_ids, frequencies


def _as_landed_batch(accumulated: _Accumulated, frequencies: pl.DataFrame) -> pl.DataFrame:
    """Every landed row of the batch with its grid flags: what the quality checks look at."""
    batch = pl.concat(accumulated.as_landed, how="diagonal_relaxed").rename({SOURCE_ROW: "line"})
    located = batch.with_row_index("_row")
    flagged = grid_flags(
        located.filter(pl.col("series_id").is_not_null() & pl.col("ts").is_not_null()).select(
            "_row", pl.col("series_id").alias(UNIQUE_ID), pl.col("ts").alias(DS)
        ),
        frequencies,
    ).select("_row", "on_grid", "steps_missing_before")
    return located.join(flagged, on="_row", how="left").drop("_row")


def stage_landed_files(
    conn: Connection,
    paths: Sequence[Path],
    *,
    roles: ColumnRoles,
    settings: Settings,
    calendar: DateCalendar,
    plan_cells: bool = True,
) -> StagedBatch:
    """Stage `paths` in one transaction (`conn`): a killed ingest leaves nothing half-staged.

    `plan_cells=False` leaves `cells` empty, for a caller that stages several batches and asks
    for the pending cells once (`pending_cells` over all of them).
    """
    from forecasting_pipeline.checks.landed_quality import QualityThresholds, validate_landed_batch

    batch = StagedBatch(batch_id=uuid.uuid4().hex, files=[], calendar=calendar)
    accumulated = _Accumulated()
    roots = settings.allowed_ingest_roots
    for path in paths:
        outcome = _stage_file(conn, path, roles, settings, calendar, batch.batch_id, accumulated, roots)
        batch.files.append(outcome)
        if outcome.status == "rejected" and path.parent.resolve() == settings.landing_dir.resolve():
            batch.rejected_moves.append((path, settings.rejected_dir / path.name))

    if accumulated.file_ids:
        batch.new_series, frequencies = _register_series(conn, accumulated)
        thresholds = QualityThresholds(
            max_failing_fraction=settings.max_failing_fraction,
            lower_bound=settings.target_min,
            upper_bound=settings.target_max,
        )
        batch.quality = validate_landed_batch(_as_landed_batch(accumulated, frequencies), thresholds)
        store_quality_results(conn, batch.batch_id, accumulated.file_ids, batch.quality)
        failed = [o for o in batch.quality if o.blocking and not o.success]
        if failed:
            batch.held = True
            reason = "held by failed quality checks: " + ", ".join(
                f"{o.check_name} ({o.unexpected_fraction:.1%} of {o.evaluated} rows)" for o in failed
            )
            hold_files(conn, accumulated.file_ids, reason)
            batch.files = [
                replace(f, status="held", message=reason)
                if f.file_id in accumulated.file_ids and f.status == "staged"
                else f
                for f in batch.files
            ]
        newest = pl.concat(accumulated.spans, how="vertical_relaxed")["last_ts"].max()
        if newest is not None:
            batch.calendar = plan_calendar(calendar, newest, settings.calendar_history_windows)
    if not plan_cells:
        return batch
    new_series_cells = _cells_of_new_series(accumulated, batch.new_series, batch.calendar)
    batch.cells = pl.concat(
        [
            pending_cells(conn, batch.calendar, [batch.batch_id], skip_series=batch.new_series),
            new_series_cells,
        ]
    )
    return batch


def _cells_of_new_series(
    accumulated: _Accumulated, new_series: list[str], calendar: DateCalendar
) -> pl.DataFrame:
    """Every cell of a series first seen in this batch has new data: no need to ask the database."""
    schema = {"series_id": pl.Utf8, "partition_key": pl.Utf8, "window_key": pl.Utf8}
    if not new_series:
        return pl.DataFrame(schema=schema)
    cells = (
        pl.concat(accumulated.timestamps)
        .filter(pl.col(UNIQUE_ID).is_in(new_series))
        .select(pl.col(UNIQUE_ID).alias("series_id"), window_keys(pl.col(DS), calendar).alias("window_key"))
        .filter(pl.col("window_key").is_not_null())
        .unique()
    )
    return cells.with_columns(partition_keys(cells["series_id"]).alias("partition_key")).select(list(schema))


def move_rejected(batch: StagedBatch) -> None:
    """After the batch committed: set rejected files aside so later ingests do not trip on them."""
    for source, target in batch.rejected_moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.exists():
            shutil.move(str(source), str(target))
