"""Observations: staged rows accepted per cell in set-based statements, read back per window.

A `raw_observations` run accepts the staged rows of its series × window cells in one
transaction: new rows are inserted, restated ones replaced (the old value goes to
`observation_revisions`), unchanged ones are not touched (`IS DISTINCT FROM`). Each cell's
content fingerprint is kept in `cell_versions`; a window's history version folds every cell up
to it, which is what makes later windows' panels stale after a restatement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.schemas import DS, UNIQUE_ID, Y
from forecasting_pipeline.storage.bulk import copy_query
from forecasting_pipeline.storage.tables import (
    CASCADE_QUEUE,
    CELL_VERSIONS,
    DATA_QUALITY_RESULTS,
    HISTORY_PENDING,
    LANDED_FILES,
    OBSERVATION_REVISIONS,
    OBSERVATIONS,
    SCHEMA,
    STAGED_OBSERVATIONS,
)

# Stands in for "no lower bound" of the history slice.
_BEGINNING = datetime(1, 1, 1)


@dataclass(frozen=True)
class Cell:
    """A series × window cell as a time range of one series."""

    series_id: str
    window_key: str
    start: datetime | None  # None: the history slice, everything older
    end: datetime


@dataclass(frozen=True)
class CellResult:
    series_id: str
    window_key: str
    inserted: int
    restated: int
    rows: int
    content_hash: str


# The cells as a relation built from bound arrays: any number of cells, one statement.
_CELLS = (
    "unnest(CAST(:ids AS text[]), CAST(:windows AS text[]), CAST(:starts AS timestamp[]), "
    "CAST(:ends AS timestamp[])) AS c(series_id, window_key, start_ts, end_ts)"
)


def _cell_params(cells: Sequence[Cell]) -> dict[str, list]:
    return {
        "ids": [c.series_id for c in cells],
        "windows": [c.window_key for c in cells],
        "starts": [c.start or _BEGINNING for c in cells],
        "ends": [c.end for c in cells],
    }


def load_cells(conn: Connection, cells: Sequence[Cell]) -> None:
    conn.exec_driver_sql(
        "CREATE TEMP TABLE IF NOT EXISTS _cells (series_id text, window_key text, start_ts timestamp, "
        "end_ts timestamp) ON COMMIT DROP"
    )
    conn.exec_driver_sql("TRUNCATE _cells")
    conn.execute(text(f"INSERT INTO _cells SELECT * FROM {_CELLS}"), _cell_params(cells))


def staged_file_ids(conn: Connection, cells: Sequence[Cell]) -> list[int]:
    """Landed files (staged or held) whose series and time span reach these cells.

    Read from the manifest (series touched, first and last timestamp), not by scanning the
    staged rows, so a run over millions of rows pays nothing for it.
    """
    if not cells:
        return []
    return list(
        conn.execute(
            text(
                f"""
                SELECT file_id FROM {SCHEMA}.{LANDED_FILES}
                WHERE status IN ('staged', 'held') AND series_ids && CAST(:ids AS text[])
                  AND last_ts >= :start AND first_ts < :end
                ORDER BY file_id
                """
            ),
            {
                "ids": sorted({c.series_id for c in cells}),
                "start": min(c.start or _BEGINNING for c in cells),
                "end": max(c.end for c in cells),
            },
        ).scalars()
    )


def quality_results_for_files(conn: Connection, file_ids: Sequence[int]) -> list[dict]:
    """Stored expectation results of the batches these files were checked in."""
    if not file_ids:
        return []
    rows = conn.execute(
        text(
            f"SELECT * FROM {SCHEMA}.{DATA_QUALITY_RESULTS} WHERE file_ids && CAST(:ids AS bigint[]) "
            "ORDER BY batch_id, check_name"
        ),
        {"ids": list(file_ids)},
    )
    return [dict(r._mapping) for r in rows]


def _pending_files_overlap(conn: Connection) -> bool:
    return bool(
        conn.execute(
            text(
                f"""
                SELECT EXISTS (
                    SELECT 1 FROM {SCHEMA}.{LANDED_FILES} a JOIN {SCHEMA}.{LANDED_FILES} b
                      ON a.file_id < b.file_id AND a.series_ids && b.series_ids
                     AND a.first_ts <= b.last_ts AND b.first_ts <= a.last_ts
                    WHERE a.status = 'staged' AND b.status = 'staged'
                )
                """
            )
        ).scalar()
    )


# Order-independent fingerprint of a row; a cell's fingerprint is the sum over its rows, so it is
# updated from the changed rows alone (new rows add, restated rows swap old for new).
_ROW_HASH = (
    "(timestamp_hash_extended(ts, 1) # hashfloat8extended({y}, 2) "
    "# jsonb_hash_extended({drivers}, 3))::numeric"
)


def accept_staged_cells(conn: Connection, cells: Sequence[Cell], run_id: str) -> list[CellResult]:
    """Accept the staged rows of `cells` from files not held by a quality check.

    One pass classifies every incoming row against what is stored (new, restated, unchanged);
    restated rows are audited and updated, new rows bulk-inserted, unchanged rows left alone.
    The newest file wins where several staged rows share a (series, ts). Cell fingerprints are
    updated from the changed rows only, so a run costs what it changes, not the cells' history.
    Two runs accepting the same cell at once conflict on the primary key; the later fails and
    can simply be re-run.
    """
    load_cells(conn, cells)
    conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")  # sorts of millions of staged rows in memory
    conn.exec_driver_sql("DROP TABLE IF EXISTS _incoming")
    # Only pending files that overlap in series and time can stage the same (series, ts) twice;
    # without such a pair the newest-file-wins sort of millions of rows is skipped.
    newest_wins = (
        "DISTINCT ON (s.series_id, s.ts)",
        "ORDER BY s.series_id, s.ts, s.file_id DESC, s.line DESC",
    )
    distinct, order = newest_wins if _pending_files_overlap(conn) else ("", "")
    conn.exec_driver_sql(
        f"""
        CREATE TEMP TABLE _staged ON COMMIT DROP AS
        SELECT {distinct} s.series_id, s.ts, s.y, s.drivers, s.file_id, f.file_name, c.window_key
        FROM {SCHEMA}.{STAGED_OBSERVATIONS} s
        JOIN _cells c ON c.series_id = s.series_id AND s.ts >= c.start_ts AND s.ts < c.end_ts
        JOIN {SCHEMA}.{LANDED_FILES} f ON f.file_id = s.file_id AND f.status = 'staged'
        {order}
        """
    )
    conn.exec_driver_sql(
        f"""
        CREATE TEMP TABLE _incoming ON COMMIT DROP AS
        SELECT i.*, o.series_id IS NULL AS is_new, o.y AS old_y, o.drivers AS old_drivers,
               o.source AS old_source
        FROM _staged i LEFT JOIN {SCHEMA}.{OBSERVATIONS} o ON o.series_id = i.series_id AND o.ts = i.ts
        WHERE o.series_id IS NULL OR o.y IS DISTINCT FROM i.y OR o.drivers IS DISTINCT FROM i.drivers
        """
    )
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{OBSERVATION_REVISIONS}
                (series_id, ts, window_key, old_y, new_y, old_drivers, new_drivers, old_source,
                 new_file_id, new_source, dagster_run_id)
            SELECT series_id, ts, window_key, old_y, y, old_drivers, drivers, old_source,
                   file_id, file_name, :run_id
            FROM _incoming WHERE NOT is_new
            """
        ),
        {"run_id": run_id},
    )
    conn.execute(
        text(
            f"""
            UPDATE {SCHEMA}.{OBSERVATIONS} o SET y = i.y, drivers = i.drivers, window_key = i.window_key,
                source = i.file_name, file_id = i.file_id, dagster_run_id = :run_id, ingested_at = now()
            FROM _incoming i
            WHERE NOT i.is_new AND o.series_id = i.series_id AND o.ts = i.ts
            """
        ),
        {"run_id": run_id},
    )
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{OBSERVATIONS}
                (series_id, ts, y, drivers, window_key, source, file_id, dagster_run_id)
            SELECT series_id, ts, y, drivers, window_key, file_name, file_id, :run_id
            FROM _incoming WHERE is_new
            """
        ),
        {"run_id": run_id},
    )
    _consume_staged(conn, deduplicated=bool(distinct))
    conn.exec_driver_sql(
        f"INSERT INTO {SCHEMA}.{HISTORY_PENDING} (window_key) SELECT DISTINCT window_key FROM _incoming "
        "ON CONFLICT (window_key) DO NOTHING"
    )
    # The retraining cascade's queue; a cell already claimed by a request is queued again.
    conn.exec_driver_sql(
        f"INSERT INTO {SCHEMA}.{CASCADE_QUEUE} (series_id, window_key) "
        "SELECT DISTINCT series_id, window_key FROM _incoming "
        "ON CONFLICT (series_id, window_key) DO UPDATE SET request_id = NULL, queued_at = now()"
    )
    conn.execute(
        text(
            f"""
            UPDATE {SCHEMA}.{LANDED_FILES} f SET status = 'ingested', ingested_at = now(),
                dagster_run_id = :run_id
            WHERE f.status = 'staged'
              AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.{STAGED_OBSERVATIONS} s WHERE s.file_id = f.file_id)
            """
        ),
        {"run_id": run_id},
    )
    return _update_cell_versions(conn, cells, run_id)


def _consume_staged(conn: Connection, *, deduplicated: bool) -> None:
    """Remove the staged rows this run accepted.

    When they are all the staging area holds (a first ingest, a weekly batch run at once), the
    table is truncated instead of deleting millions of rows one by one.
    """
    if not deduplicated:
        consumed = conn.exec_driver_sql("SELECT count(*) FROM _staged").scalar_one()
        pending = conn.exec_driver_sql(f"SELECT count(*) FROM {SCHEMA}.{STAGED_OBSERVATIONS}").scalar_one()
        if consumed == pending:
            conn.exec_driver_sql(f"TRUNCATE {SCHEMA}.{STAGED_OBSERVATIONS}")
            return
    conn.exec_driver_sql(
        f"""
        DELETE FROM {SCHEMA}.{STAGED_OBSERVATIONS} s USING _cells c, {SCHEMA}.{LANDED_FILES} f
        WHERE c.series_id = s.series_id AND s.ts >= c.start_ts AND s.ts < c.end_ts
          AND f.file_id = s.file_id AND f.status = 'staged'
        """
    )


def _update_cell_versions(conn: Connection, cells: Sequence[Cell], run_id: str) -> list[CellResult]:
    """Fold this run's changes into each cell's fingerprint; store the cells that changed."""
    new_hash = _ROW_HASH.format(y="y", drivers="drivers")
    old_hash = _ROW_HASH.format(y="old_y", drivers="old_drivers")
    rows = conn.execute(
        text(
            f"""
            WITH changes AS (
                SELECT series_id, window_key,
                       count(*) FILTER (WHERE is_new) AS inserted,
                       count(*) FILTER (WHERE NOT is_new) AS restated,
                       sum({new_hash}) - coalesce(sum({old_hash}) FILTER (WHERE NOT is_new), 0) AS delta
                FROM _incoming GROUP BY series_id, window_key
            )
            SELECT c.series_id, c.window_key,
                   coalesce(ch.inserted, 0) AS inserted, coalesce(ch.restated, 0) AS restated,
                   coalesce(v.rows, 0) + coalesce(ch.inserted, 0) AS rows,
                   coalesce(v.hash_sum, 0) + coalesce(ch.delta, 0) AS hash_sum
            FROM _cells c
            LEFT JOIN changes ch ON ch.series_id = c.series_id AND ch.window_key = c.window_key
            LEFT JOIN {SCHEMA}.{CELL_VERSIONS} v ON v.series_id = c.series_id AND v.window_key = c.window_key
            ORDER BY c.series_id, c.window_key
            """
        )
    ).all()
    results = [
        CellResult(
            r.series_id,
            r.window_key,
            inserted=r.inserted,
            restated=r.restated,
            rows=r.rows,
            content_hash=hashlib.md5(f"{r.rows}:{r.hash_sum}".encode(), usedforsecurity=False).hexdigest(),
        )
        for r in rows
    ]
    changed = [(r, row.hash_sum) for r, row in zip(results, rows, strict=True) if r.inserted or r.restated]
    if changed:
        conn.execute(
            text(
                f"""
                INSERT INTO {SCHEMA}.{CELL_VERSIONS}
                    (series_id, window_key, rows, hash_sum, content_hash, dagster_run_id)
                SELECT *, :run_id FROM unnest(CAST(:ids AS text[]), CAST(:windows AS text[]),
                    CAST(:rows AS bigint[]), CAST(:sums AS numeric[]), CAST(:hashes AS text[]))
                ON CONFLICT (series_id, window_key) DO UPDATE SET rows = EXCLUDED.rows,
                    hash_sum = EXCLUDED.hash_sum, content_hash = EXCLUDED.content_hash,
                    dagster_run_id = EXCLUDED.dagster_run_id, updated_at = now()
                """
            ),
            {
                "run_id": run_id,
                "ids": [r.series_id for r, _ in changed],
                "windows": [r.window_key for r, _ in changed],
                "rows": [r.rows for r, _ in changed],
                "sums": [total for _, total in changed],
                "hashes": [r.content_hash for r, _ in changed],
            },
        )
    return results


def earliest_pending_history(conn: Connection) -> str | None:
    """The earliest window whose history must be versioned again (None: all up to date)."""
    return conn.execute(text(f"SELECT min(window_key) FROM {SCHEMA}.{HISTORY_PENDING}")).scalar()


def clear_pending_history(conn: Connection, through: str) -> None:
    conn.execute(text(f"DELETE FROM {SCHEMA}.{HISTORY_PENDING} WHERE window_key <= :w"), {"w": through})


@dataclass(frozen=True)
class HistoryVersion:
    window_key: str
    version: str
    series: int
    rows: int


def history_versions(conn: Connection, windows: Sequence[str]) -> list[HistoryVersion]:
    """Fingerprint of every series' cells up to each window: changes when any earlier cell does."""
    rows = conn.execute(
        text(
            f"""
            SELECT w.window_key,
                   md5(coalesce(string_agg(v.series_id || ':' || v.window_key || ':' || v.content_hash, ','
                                           ORDER BY v.series_id, v.window_key), '')) AS version,
                   count(DISTINCT v.series_id) AS series, coalesce(sum(v.rows), 0) AS rows
            FROM unnest(CAST(:windows AS text[])) AS w(window_key)
            LEFT JOIN {SCHEMA}.{CELL_VERSIONS} v ON v.window_key <= w.window_key
            GROUP BY w.window_key ORDER BY w.window_key
            """
        ),
        {"windows": list(windows)},
    ).all()
    return [HistoryVersion(r.window_key, r.version, int(r.series), int(r.rows)) for r in rows]


def _decoded(rows: pl.DataFrame, columns: dict[str, pl.Expr]) -> pl.DataFrame:
    """COPY text rows with their JSONB `drivers` spread into one Float64 column per driver."""
    frame = rows.select(**columns)
    if rows.height and rows["drivers"].str.len_bytes().max() > 2:  # some row has more than "{}"
        drivers = rows["drivers"].str.json_decode(infer_schema_length=None).struct.unnest()
        frame = frame.hstack(drivers.select(pl.all().cast(pl.Float64)))
    return frame


_TIMESTAMP = pl.col(DS).str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="ns")
_PANEL_SCHEMA = pl.Schema({UNIQUE_ID: pl.Utf8, DS: pl.Datetime("ns"), Y: pl.Float64})


def read_history(
    conn: Connection, series_ids: Sequence[str] | None, since: datetime | None, until: datetime
) -> pl.DataFrame:
    """Observations of `series_ids` (None: all series) with since <= ts < until, long, drivers as
    columns: the one reader every study, feature and model input goes through.

    Read in bulk (COPY into polars) by (series, time range), so a question about a few series or
    one window never reads all series or all history; `unique_id` is the series id as landed (not
    its partition key). Drivers are stored as JSONB per row and become one Float64 column each.
    """
    filters = ["ts < %s"]
    params: list[object] = [until]
    if since is not None:
        filters.append("ts >= %s")
        params.append(since)
    if series_ids is not None:
        filters.append("series_id = ANY(%s)")
        params.append(list(series_ids))
    rows = copy_query(
        conn,
        f"SELECT series_id AS {UNIQUE_ID}, ts AS {DS}, y AS {Y}, drivers::text AS drivers "
        f"FROM {SCHEMA}.{OBSERVATIONS} WHERE {' AND '.join(filters)} ORDER BY series_id, ts",
        params,
    )
    if rows.height == 0:
        return pl.DataFrame(schema=_PANEL_SCHEMA)
    return _decoded(rows, {UNIQUE_ID: pl.col(UNIQUE_ID), DS: _TIMESTAMP, Y: pl.col(Y).cast(pl.Float64)})


def read_panel(conn: Connection, until: datetime, series_ids: Sequence[str] | None = None) -> pl.DataFrame:
    """Every observation before `until` of `series_ids` (default: all series): a model's training
    history (see `read_history`)."""
    return read_history(conn, series_ids, None, until)


def read_future_drivers(conn: Connection, cutoffs: pd.Series, steps: int) -> pd.DataFrame:
    """Drivers of each series' first `steps` stored rows after its cutoff, as columns.

    `cutoffs` maps series id -> last timestamp of its training history. For a past window these
    rows exist (later windows' data): future-known drivers (a load forecast published ahead)
    can feed the window's forecast without using any later target value.
    """
    rows = copy_query(
        conn,
        f"""
        SELECT series_id AS {UNIQUE_ID}, ts AS {DS}, drivers::text AS drivers FROM (
            SELECT o.series_id, o.ts, o.drivers,
                   row_number() OVER (PARTITION BY o.series_id ORDER BY o.ts) AS position
            FROM unnest(%s::text[], %s::timestamp[]) AS c(series_id, cutoff)
            JOIN {SCHEMA}.{OBSERVATIONS} o ON o.series_id = c.series_id AND o.ts > c.cutoff
        ) ahead
        WHERE position <= %s
        """,
        (cutoffs.index.astype(str).tolist(), pd.to_datetime(cutoffs).tolist(), steps),
    )
    if rows.height == 0:
        return pd.DataFrame({UNIQUE_ID: pd.Series(dtype=object), DS: pd.Series(dtype="datetime64[ns]")})
    return _decoded(rows, {UNIQUE_ID: pl.col(UNIQUE_ID), DS: _TIMESTAMP}).to_pandas()
