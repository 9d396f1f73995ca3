"""The landed-file manifest, the staging area and the quarantine: the front door's tables.

A landed file is read and validated once. Its valid rows wait in `staged_observations` until the
`raw_observations` run of their cell accepts them; its refused rows go to `quarantine` at once,
with the file and line they came from. Every write is a COPY or one set-based statement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.calendar import DateCalendar
from forecasting_pipeline.storage.bulk import copy_frame, copy_into_scratch
from forecasting_pipeline.storage.tables import (
    DATA_QUALITY_RESULTS,
    LANDED_FILES,
    OBSERVATIONS,
    QUARANTINE,
    QUARANTINE_COUNTS,
    SCHEMA,
    SERIES,
    STAGED_OBSERVATIONS,
)

STAGED_COLUMNS = ("file_id", "line", "series_id", "ts", "y", "drivers")
QUARANTINE_COLUMNS = ("fingerprint", "series_id", "raw_ts", "raw_row", "reason", "source", "file_id", "line")


@dataclass(frozen=True)
class KnownFile:
    file_id: int
    status: str
    file_name: str


def find_landed_file(conn: Connection, content_hash: str) -> KnownFile | None:
    """The newest usable manifest entry with this content (a re-landed file is recognized by hash)."""
    row = conn.execute(
        text(
            f"SELECT file_id, status, file_name FROM {SCHEMA}.{LANDED_FILES} "
            "WHERE content_hash = :hash AND status <> 'rejected' ORDER BY file_id DESC LIMIT 1"
        ),
        {"hash": content_hash},
    ).one_or_none()
    return KnownFile(row.file_id, row.status, row.file_name) if row else None


def add_landed_file(conn: Connection, entry: dict[str, Any]) -> int:
    """Insert a manifest row; `entry` holds landed_files columns. Returns the file id."""
    record = {**entry}
    for column in ("column_mapping", "warnings"):
        record[column] = json.dumps(record.get(column, {} if column == "column_mapping" else []))
    columns = ", ".join(record)
    values = ", ".join(
        f"CAST(:{c} AS jsonb)" if c in ("column_mapping", "warnings") else f":{c}" for c in record
    )
    return conn.execute(
        text(f"INSERT INTO {SCHEMA}.{LANDED_FILES} ({columns}) VALUES ({values}) RETURNING file_id"), record
    ).scalar_one()


def update_landed_file(conn: Connection, file_id: int, **values: Any) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    conn.execute(
        text(f"UPDATE {SCHEMA}.{LANDED_FILES} SET {assignments} WHERE file_id = :file_id"),
        {**values, "file_id": file_id},
    )


def set_file_warnings(conn: Connection, file_id: int, warnings: Sequence[str]) -> None:
    conn.execute(
        text(f"UPDATE {SCHEMA}.{LANDED_FILES} SET warnings = CAST(:warnings AS jsonb) WHERE file_id = :id"),
        {"warnings": json.dumps(list(warnings)), "id": file_id},
    )


def hold_files(conn: Connection, file_ids: Sequence[int], reason: str) -> None:
    """A batch that failed a blocking quality check waits here instead of being accepted."""
    conn.execute(
        text(
            f"UPDATE {SCHEMA}.{LANDED_FILES} SET status = 'held', reason = :reason WHERE file_id = ANY(:ids)"
        ),
        {"reason": reason, "ids": list(file_ids)},
    )


def stage_rows(conn: Connection, file_id: int, valid: pl.DataFrame, drivers: Sequence[str]) -> int:
    """COPY a file's valid rows into the staging area; drivers travel as one JSON object per row."""
    frame = valid.select(
        pl.lit(file_id, dtype=pl.Int64).alias("file_id"),
        pl.col("source_row").alias("line"),
        pl.col("unique_id").alias("series_id"),
        pl.col("ds").alias("ts"),
        pl.col("y"),
        (pl.struct([pl.col(c) for c in drivers]).struct.json_encode() if drivers else pl.lit("{}")).alias(
            "drivers"
        ),
    )
    return copy_frame(conn, f"{SCHEMA}.{STAGED_OBSERVATIONS}", frame, STAGED_COLUMNS)


def quarantine_rows(
    conn: Connection, refused: pl.DataFrame, *, file_id: int | None, source: str, content_hash: str
) -> int:
    """Keep refused rows with their reason, file and line; the same row refused twice is kept once.

    `refused` has source_row, unique_id, raw_ts, raw_row (JSON text) and reason. The fingerprint
    (file content, line, reason) makes re-staging the same file idempotent.
    """
    if refused.height == 0:
        return 0
    frame = refused.select(
        pl.concat_str(
            [pl.lit(content_hash), pl.col("source_row").cast(pl.Utf8), pl.col("reason")], separator=":"
        ).alias("fingerprint"),
        pl.col("unique_id").alias("series_id"),
        pl.col("raw_ts"),
        pl.col("raw_row"),
        pl.col("reason"),
        pl.lit(source).alias("source"),
        pl.lit(file_id, dtype=pl.Int64).alias("file_id"),
        pl.col("source_row").alias("line"),
    )
    copy_into_scratch(conn, "_quarantine_in", f"{SCHEMA}.{QUARANTINE}", frame, QUARANTINE_COLUMNS)
    columns = ", ".join(QUARANTINE_COLUMNS)
    # The per-reason totals move with the rows (reasons locked in order: concurrent stagings
    # wait for each other there instead of deadlocking).
    return conn.execute(
        text(
            f"""
            WITH inserted AS (
                INSERT INTO {SCHEMA}.{QUARANTINE} ({columns}) SELECT {columns} FROM _quarantine_in
                ON CONFLICT (fingerprint) DO NOTHING
                RETURNING reason
            ), counted AS (
                INSERT INTO {SCHEMA}.{QUARANTINE_COUNTS} (reason, rows)
                SELECT reason, count(*) FROM inserted GROUP BY reason ORDER BY reason
                ON CONFLICT (reason) DO UPDATE
                    SET rows = {QUARANTINE_COUNTS}.rows + EXCLUDED.rows, updated_at = now()
            )
            SELECT count(*) FROM inserted
            """
        )
    ).scalar_one()


def window_sql(calendar: DateCalendar, column: str) -> str:
    """SQL expression of the `date` key of timestamp `column` (history slice included).

    Built from the cadence (one of three literals) and bound as `:calendar_start`.
    """
    floor = {
        "daily": f"date_trunc('day', {column})",
        "weekly": f"(date_trunc('week', {column} + interval '1 day') - interval '1 day')",
        "monthly": f"date_trunc('month', {column})",
    }[calendar.cadence]
    return f"to_char(GREATEST({floor}, CAST(:calendar_start AS timestamp)), 'YYYY-MM-DD')"


def pending_cells(
    conn: Connection,
    calendar: DateCalendar,
    batch_ids: Sequence[str] = (),
    skip_series: Sequence[str] = (),
) -> pl.DataFrame:
    """Series × window cells whose staged rows are new or differ from what is stored.

    Unchanged rows (a re-sent history, say) make no cell run. With `batch_ids`, also the cells
    of those batches' held files, so their runs report the failed quality checks. `skip_series`
    (series first seen in this batch, whose every cell is new) are left to the caller.
    """
    window = window_sql(calendar, "s.ts")
    rows = conn.execute(
        text(
            f"""
            SELECT DISTINCT s.series_id, se.partition_key, {window} AS window_key
            FROM {SCHEMA}.{STAGED_OBSERVATIONS} s
            JOIN {SCHEMA}.{LANDED_FILES} f ON f.file_id = s.file_id
            JOIN {SCHEMA}.{SERIES} se ON se.series_id = s.series_id
            LEFT JOIN unnest(CAST(:skip AS text[])) AS n(series_id) ON n.series_id = s.series_id
            LEFT JOIN {SCHEMA}.{OBSERVATIONS} o ON o.series_id = s.series_id AND o.ts = s.ts
            WHERE (f.status = 'staged' OR (f.status = 'held' AND f.batch_id = ANY(:batch_ids)))
              AND n.series_id IS NULL
              AND (o.series_id IS NULL OR o.y IS DISTINCT FROM s.y OR o.drivers IS DISTINCT FROM s.drivers)
            """
        ),
        {
            "calendar_start": datetime.combine(calendar.start, datetime.min.time()),
            "batch_ids": list(batch_ids),
            "skip": list(skip_series),
        },
    ).all()
    return pl.DataFrame(
        [tuple(r) for r in rows],
        schema={"series_id": pl.Utf8, "partition_key": pl.Utf8, "window_key": pl.Utf8},
        orient="row",
    )


def store_quality_results(
    conn: Connection, batch_id: str, file_ids: Sequence[int], outcomes: Sequence[Any]
) -> None:
    """One row per expectation of the batch (outcomes are `ExpectationOutcome`s)."""
    if not outcomes:
        return
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{DATA_QUALITY_RESULTS}
                (batch_id, check_name, expectation, blocking, success, evaluated, unexpected,
                 unexpected_fraction, details, file_ids)
            VALUES (:batch_id, :check_name, :expectation, :blocking, :success, :evaluated, :unexpected,
                    :unexpected_fraction, CAST(:details AS jsonb), :file_ids)
            ON CONFLICT (batch_id, check_name) DO UPDATE SET success = EXCLUDED.success,
                evaluated = EXCLUDED.evaluated, unexpected = EXCLUDED.unexpected,
                unexpected_fraction = EXCLUDED.unexpected_fraction, details = EXCLUDED.details
            """
        ),
        [
            {
                "batch_id": batch_id,
                "check_name": o.check_name,
                "expectation": o.expectation,
                "blocking": o.blocking,
                "success": o.success,
                "evaluated": o.evaluated,
                "unexpected": o.unexpected,
                "unexpected_fraction": o.unexpected_fraction,
                "details": json.dumps({"description": o.description, **o.details}, default=str),
                "file_ids": list(file_ids),
            }
            for o in outcomes
        ],
    )


def release_held_files(conn: Connection) -> list[int]:
    """Accept batches a blocking quality check held, after a person has looked at them.

    Their failed results stay on record, marked released, and no longer block their cells.
    """
    released = list(
        conn.execute(
            text(
                f"UPDATE {SCHEMA}.{LANDED_FILES} SET status = 'staged', "
                "reason = 'released after a failed quality check: ' || coalesce(reason, '') "
                "WHERE status = 'held' RETURNING file_id"
            )
        ).scalars()
    )
    if released:
        conn.execute(
            text(
                f"UPDATE {SCHEMA}.{DATA_QUALITY_RESULTS} SET success = true, "
                "details = details || CAST('{\"released_by_operator\": true}' AS jsonb) "
                "WHERE NOT success AND file_ids && CAST(:ids AS bigint[])"
            ),
            {"ids": released},
        )
    return released


def pending_file_ids(conn: Connection, batch_ids: Sequence[str]) -> list[int]:
    """Files whose staged rows wait for a run: every staged file, and the batches' held ones."""
    rows = conn.execute(
        text(
            f"SELECT file_id FROM {SCHEMA}.{LANDED_FILES} "
            "WHERE status = 'staged' OR (status = 'held' AND batch_id = ANY(:batch_ids)) ORDER BY file_id"
        ),
        {"batch_ids": list(batch_ids)},
    ).all()
    return [r.file_id for r in rows]


def recently_rejected_files(conn: Connection, days: int, limit: int = 50) -> list[tuple[str, str]]:
    """(file name, reason) of files rejected in the last `days` days, newest first."""
    rows = conn.execute(
        text(
            f"SELECT file_name, reason FROM {SCHEMA}.{LANDED_FILES} WHERE status = 'rejected' "
            "AND staged_at > now() - make_interval(days => :days) ORDER BY file_id DESC LIMIT :limit"
        ),
        {"days": days, "limit": limit},
    ).all()
    return [(r.file_name, r.reason) for r in rows]
