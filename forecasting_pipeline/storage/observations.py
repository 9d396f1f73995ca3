"""Observations: staged rows accepted per cell in set-based statements, read back per window.

A `raw_observations` run accepts the staged rows of its series × window cells in one
transaction: new rows are inserted, restated ones replaced (the old value goes to
`observation_revisions`), unchanged ones are not touched (`IS DISTINCT FROM`). Each cell's
content fingerprint is kept in `cell_versions`; a window's history version folds every cell up
to it, which is what makes later windows' panels stale after a restatement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import Connection, text

from forecasting_pipeline.schemas import DS, UNIQUE_ID, Y
from forecasting_pipeline.storage.tables import (
    CELL_VERSIONS,
    DATA_QUALITY_RESULTS,
    LANDED_FILES,
    OBSERVATION_REVISIONS,
    OBSERVATIONS,
    SCHEMA,
    SERIES,
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


def _load_cells(conn: Connection, cells: Sequence[Cell]) -> None:
    conn.exec_driver_sql(
        "CREATE TEMP TABLE IF NOT EXISTS _cells (series_id text, window_key text, start_ts timestamp, "
        "end_ts timestamp) ON COMMIT DROP"
    )
    conn.exec_driver_sql("TRUNCATE _cells")
    conn.execute(
        text(
            "INSERT INTO _cells SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:windows AS text[]), "
            "CAST(:starts AS timestamp[]), CAST(:ends AS timestamp[]))"
        ),
        {
            "ids": [c.series_id for c in cells],
            "windows": [c.window_key for c in cells],
            "starts": [c.start or _BEGINNING for c in cells],
            "ends": [c.end for c in cells],
        },
    )


def staged_file_ids(conn: Connection, cells: Sequence[Cell]) -> list[int]:
    """Landed files (staged or held) with rows waiting in these cells."""
    _load_cells(conn, cells)
    return list(
        conn.execute(
            text(
                f"""
                SELECT DISTINCT s.file_id FROM {SCHEMA}.{STAGED_OBSERVATIONS} s
                JOIN _cells c ON c.series_id = s.series_id AND s.ts >= c.start_ts AND s.ts < c.end_ts
                JOIN {SCHEMA}.{LANDED_FILES} f ON f.file_id = s.file_id AND f.status IN ('staged', 'held')
                ORDER BY 1
                """
            )
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


def accept_staged_cells(conn: Connection, cells: Sequence[Cell], run_id: str) -> list[CellResult]:
    """Accept the staged rows of `cells` from files not held by a quality check.

    The newest file wins where several staged rows share a (series, ts). Returns per cell what
    changed and its new content fingerprint; consumed staged rows are deleted and files whose
    rows are all accepted are marked ingested.
    """
    _load_cells(conn, cells)
    conn.exec_driver_sql("DROP TABLE IF EXISTS _incoming")
    conn.exec_driver_sql(
        f"""
        CREATE TEMP TABLE _incoming ON COMMIT DROP AS
        SELECT DISTINCT ON (s.series_id, s.ts)
               s.series_id, s.ts, s.y, s.drivers, s.file_id, f.file_name, c.window_key
        FROM {SCHEMA}.{STAGED_OBSERVATIONS} s
        JOIN _cells c ON c.series_id = s.series_id AND s.ts >= c.start_ts AND s.ts < c.end_ts
        JOIN {SCHEMA}.{LANDED_FILES} f ON f.file_id = s.file_id AND f.status = 'staged'
        ORDER BY s.series_id, s.ts, s.file_id DESC, s.line DESC
        """
    )
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{OBSERVATION_REVISIONS}
                (series_id, ts, window_key, old_y, new_y, old_drivers, new_drivers, old_source,
                 new_file_id, new_source, dagster_run_id)
            SELECT i.series_id, i.ts, i.window_key, o.y, i.y, o.drivers, i.drivers, o.source,
                   i.file_id, i.file_name, :run_id
            FROM _incoming i JOIN {SCHEMA}.{OBSERVATIONS} o ON o.series_id = i.series_id AND o.ts = i.ts
            WHERE o.y IS DISTINCT FROM i.y OR o.drivers IS DISTINCT FROM i.drivers
            """
        ),
        {"run_id": run_id},
    )
    changes = conn.execute(
        text(
            f"""
            WITH written AS (
                INSERT INTO {SCHEMA}.{OBSERVATIONS}
                    (series_id, ts, y, drivers, window_key, source, file_id, dagster_run_id)
                SELECT series_id, ts, y, drivers, window_key, file_name, file_id, :run_id FROM _incoming
                ON CONFLICT (series_id, ts) DO UPDATE SET
                    y = EXCLUDED.y, drivers = EXCLUDED.drivers, window_key = EXCLUDED.window_key,
                    source = EXCLUDED.source, file_id = EXCLUDED.file_id,
                    dagster_run_id = EXCLUDED.dagster_run_id, ingested_at = now()
                WHERE {OBSERVATIONS}.y IS DISTINCT FROM EXCLUDED.y
                   OR {OBSERVATIONS}.drivers IS DISTINCT FROM EXCLUDED.drivers
                RETURNING series_id, window_key, (xmax = 0) AS inserted
            )
            SELECT series_id, window_key, count(*) FILTER (WHERE inserted) AS inserted,
                   count(*) FILTER (WHERE NOT inserted) AS restated
            FROM written GROUP BY series_id, window_key
            """
        ),
        {"run_id": run_id},
    ).all()
    conn.exec_driver_sql(
        f"""
        DELETE FROM {SCHEMA}.{STAGED_OBSERVATIONS} s USING _cells c, {SCHEMA}.{LANDED_FILES} f
        WHERE c.series_id = s.series_id AND s.ts >= c.start_ts AND s.ts < c.end_ts
          AND f.file_id = s.file_id AND f.status = 'staged'
        """
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
    versions = _refresh_cell_versions(conn, run_id)
    changed = {(r.series_id, r.window_key): (r.inserted, r.restated) for r in changes}
    return [
        CellResult(
            series_id,
            window_key,
            *changed.get((series_id, window_key), (0, 0)),
            rows=rows,
            content_hash=content_hash,
        )
        for series_id, window_key, rows, content_hash in versions
    ]


def _refresh_cell_versions(conn: Connection, run_id: str) -> list[tuple[str, str, int, str]]:
    """Fingerprint each cell of `_cells` from its stored rows; store it when it changed."""
    rows = conn.execute(
        text(
            f"""
            WITH fingerprints AS (
                SELECT c.series_id, c.window_key, count(o.ts) AS rows,
                       md5(coalesce(string_agg(o.ts::text || '=' || o.y::text || o.drivers::text, ','
                                               ORDER BY o.ts), '')) AS content_hash
                FROM _cells c
                LEFT JOIN {SCHEMA}.{OBSERVATIONS} o
                       ON o.series_id = c.series_id AND o.ts >= c.start_ts AND o.ts < c.end_ts
                GROUP BY c.series_id, c.window_key
            ), stored AS (
                INSERT INTO {SCHEMA}.{CELL_VERSIONS}
                    (series_id, window_key, rows, content_hash, dagster_run_id)
                SELECT series_id, window_key, rows, content_hash, :run_id FROM fingerprints
                ON CONFLICT (series_id, window_key) DO UPDATE SET rows = EXCLUDED.rows,
                    content_hash = EXCLUDED.content_hash, dagster_run_id = EXCLUDED.dagster_run_id,
                    updated_at = now()
                WHERE {CELL_VERSIONS}.content_hash IS DISTINCT FROM EXCLUDED.content_hash
            )
            SELECT series_id, window_key, rows, content_hash FROM fingerprints ORDER BY series_id, window_key
            """
        ),
        {"run_id": run_id},
    ).all()
    return [tuple(r) for r in rows]


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


def read_panel(conn: Connection, until: datetime) -> pd.DataFrame:
    """All series' observations before `until`, in long format with drivers as columns.

    `unique_id` is the series id as landed (not its partition key).
    """
    result = conn.execute(
        text(
            f"SELECT series_id, ts, y, drivers FROM {SCHEMA}.{OBSERVATIONS} "
            "WHERE ts < :until ORDER BY series_id, ts"
        ),
        {"until": until},
    )
    records = result.all()
    panel = pd.DataFrame(
        {
            UNIQUE_ID: [r.series_id for r in records],
            DS: pd.to_datetime([r.ts for r in records]),
            Y: [r.y for r in records],
        }
    )
    drivers = pd.DataFrame.from_records([r.drivers for r in records], index=panel.index)
    return pd.concat([panel, drivers], axis=1) if not drivers.empty else panel


def series_frequencies(conn: Connection, series_ids: Sequence[str]) -> dict[str, str | None]:
    """The stored sampling frequency of each series (inferred once, at registration)."""
    rows = conn.execute(
        text(f"SELECT series_id, freq FROM {SCHEMA}.{SERIES} WHERE series_id = ANY(:ids)"),
        {"ids": list(series_ids)},
    )
    return {r.series_id: r.freq for r in rows}
