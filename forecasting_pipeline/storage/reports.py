"""Read-only queries behind the HTML report: bounded, set-based reads of the domain tables.

A report must stay cheap on a deployment of 10,000 series: every query here is one statement
over all the series it covers (arrays bound as parameters, `LATERAL` for per-series slices),
and every list a person reads is capped in SQL with its full count beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.schemas import DS, INTERVAL_COLUMNS, Y
from forecasting_pipeline.storage.bulk import copy_query
from forecasting_pipeline.storage.tables import (
    BACKTEST_FOLDS,
    CELL_VERSIONS,
    CORRELATIONS,
    DATA_QUALITY_RESULTS,
    GRANGER_TESTS,
    LANDED_FILES,
    OBSERVATIONS,
    PREDICTIONS,
    PUBLISHED_FORECASTS,
    QUARANTINE,
    SCHEMA,
    SELECTION_DECISIONS,
    SERIES,
    SERIES_SCALES,
)

_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S%.f"


@dataclass(frozen=True)
class Overview:
    series: int
    observations: int
    data_windows: int
    first_data_window: str | None
    newest_data_window: str | None
    forecast_windows: int
    newest_forecast_window: str | None
    newest_published_window: str | None
    newest_observation: datetime | None


def overview(conn: Connection) -> Overview:
    """Counts of the deployment from small tables and indexes: cell versions rather than the
    observations, the predictions' window index rather than their rows."""
    row = conn.execute(
        text(
            f"""
            WITH RECURSIVE forecast_windows AS (  -- a loose index scan: one probe per window
                SELECT min(window_key) AS k FROM {SCHEMA}.{PREDICTIONS}
                UNION ALL
                SELECT (SELECT min(window_key) FROM {SCHEMA}.{PREDICTIONS} WHERE window_key > w.k)
                FROM forecast_windows w WHERE w.k IS NOT NULL
            )
            SELECT (SELECT count(*) FROM {SCHEMA}.{SERIES}) AS series,
                   (SELECT coalesce(sum(rows), 0)::bigint FROM {SCHEMA}.{CELL_VERSIONS}) AS observations,
                   (SELECT count(DISTINCT window_key) FROM {SCHEMA}.{CELL_VERSIONS}) AS data_windows,
                   (SELECT min(window_key) FROM {SCHEMA}.{CELL_VERSIONS}) AS first_data_window,
                   (SELECT max(window_key) FROM {SCHEMA}.{CELL_VERSIONS}) AS newest_data_window,
                   (SELECT count(k) FROM forecast_windows) AS forecast_windows,
                   (SELECT max(window_key) FROM {SCHEMA}.{PREDICTIONS}) AS newest_forecast_window,
                   (SELECT max(window_key) FROM {SCHEMA}.{PUBLISHED_FORECASTS}) AS newest_published_window,
                   (SELECT max(last_ts) FROM {SCHEMA}.{SERIES}) AS newest_observation
            """
        )
    ).one()
    return Overview(**row._mapping)


def has_predictions(conn: Connection, window: str) -> bool:
    return conn.execute(
        text(f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.{PREDICTIONS} WHERE window_key = :window)"),
        {"window": window},
    ).scalar_one()


@dataclass(frozen=True)
class FanData:
    """The published forecasts of some of a window's series, with their recent history and the
    actuals that arrived after each forecast's origin."""

    total_series: int  # series the window published, shown or not
    # series_id, model_name, model_version, interval_method, cutoff, step, ds, yhat and the bounds
    forecasts: pl.DataFrame
    history: pl.DataFrame  # series_id, ds, y: up to the origin
    actuals: pl.DataFrame  # series_id, ds, y: after the origin, within the horizon


def fan_data(
    conn: Connection,
    window: str,
    max_series: int,
    *,
    series_ids: Sequence[str] | None = None,
    history_per_step: int = 4,
    max_history: int = 500,
) -> FanData:
    """The first `max_series` series (by id) of the window's publication (of `series_ids`, when
    given), in three statements.

    History is the last `history_per_step` × horizon observations up to the origin (at most
    `max_history`), read through the observations' primary key per series in one `LATERAL`.
    """
    total = conn.execute(
        text(
            f"SELECT count(DISTINCT series_id) FROM {SCHEMA}.{PUBLISHED_FORECASTS} WHERE window_key = :window"
        ),
        {"window": window},
    ).scalar_one()
    scope = list(series_ids) if series_ids is not None else None
    forecasts = copy_query(
        conn,
        f"""
        WITH shown AS (
            SELECT DISTINCT series_id FROM {SCHEMA}.{PUBLISHED_FORECASTS}
            WHERE window_key = %s AND (%s::text[] IS NULL OR series_id = ANY(%s::text[]))
            ORDER BY series_id LIMIT %s
        )
        SELECT p.series_id, p.model_name, p.model_version, p.interval_method, p.cutoff, p.step, p.ds,
               p.yhat, {", ".join(f"p.{c}" for c in INTERVAL_COLUMNS)}
        FROM {SCHEMA}.{PUBLISHED_FORECASTS} p JOIN shown USING (series_id)
        WHERE p.window_key = %s ORDER BY p.series_id, p.step
        """,
        (window, scope, scope, max_series, window),
    )
    forecasts = _typed(
        forecasts,
        {
            "series_id": pl.String,
            "model_name": pl.String,
            "model_version": pl.String,
            "interval_method": pl.String,
            "cutoff": pl.Datetime("us"),
            "step": pl.Int64,
            DS: pl.Datetime("us"),
            "yhat": pl.Float64,
            **{c: pl.Float64 for c in INTERVAL_COLUMNS},
        },
    )
    observed = copy_query(
        conn,
        f"""
        WITH origins AS (
            SELECT series_id, min(cutoff) AS cutoff, max(ds) AS last_ds, count(*) AS steps
            FROM {SCHEMA}.{PUBLISHED_FORECASTS}
            WHERE window_key = %s AND series_id = ANY(%s) GROUP BY series_id
        )
        SELECT o.series_id, h.ts AS {DS}, h.y AS {Y}, false AS actual
        FROM origins o CROSS JOIN LATERAL (
            SELECT ts, y FROM {SCHEMA}.{OBSERVATIONS} x
            WHERE x.series_id = o.series_id AND x.ts <= o.cutoff
            ORDER BY x.ts DESC LIMIT least(%s, %s * o.steps)
        ) h
        UNION ALL
        SELECT o.series_id, x.ts, x.y, true
        FROM origins o JOIN {SCHEMA}.{OBSERVATIONS} x
          ON x.series_id = o.series_id AND x.ts > o.cutoff AND x.ts <= o.last_ds
        ORDER BY 1, 2
        """,
        (window, forecasts["series_id"].unique().to_list(), max_history, history_per_step),
    )
    observed = _typed(
        observed, {"series_id": pl.String, DS: pl.Datetime("us"), Y: pl.Float64, "actual": pl.String}
    )
    is_actual = pl.col("actual") == "t"
    return FanData(
        total_series=total,
        forecasts=forecasts,
        history=observed.filter(~is_actual).drop("actual"),
        actuals=observed.filter(is_actual).drop("actual"),
    )


def step_errors(conn: Connection, window: str) -> pl.DataFrame:
    """`freq_group, model, step, error, scaled`: each candidate's mean absolute fold error per
    horizon step, raw and over each series' MASE scale (so series of any size pool fairly)."""
    frame = copy_query(
        conn,
        f"""
        SELECT f.freq_group, f.model_name AS model, f.step,
               avg(abs(f.y - f.yhat)) AS error,
               avg(abs(f.y - f.yhat) / nullif(s.scale, 0)) AS scaled
        FROM {SCHEMA}.{BACKTEST_FOLDS} f
        LEFT JOIN {SCHEMA}.{SERIES_SCALES} s ON s.series_id = f.series_id AND s.window_key = f.window_key
        WHERE f.window_key = %s AND f.y IS NOT NULL AND f.yhat IS NOT NULL
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        """,
        (window,),
    )
    return _typed(
        frame,
        {
            "freq_group": pl.String,
            "model": pl.String,
            "step": pl.Int64,
            "error": pl.Float64,
            "scaled": pl.Float64,
        },
    )


@dataclass(frozen=True)
class ChampionRows:
    total: int
    rows: list[dict[str, Any]]


def champion_rows(conn: Connection, window: str, limit: int) -> ChampionRows:
    """Each series' current champion with the window's selection decision and publication."""
    params = {"window": window, "limit": limit}
    total = conn.execute(text(f"SELECT count(*) FROM {SCHEMA}.current_champions"), params).scalar_one()
    rows = conn.execute(
        text(
            f"""
            SELECT c.series_id, c.model_name AS champion, c.window_key AS since_window, c.event,
                   d.decision, d.metric, d.challenger, d.challenger_score, d.champion_score,
                   p.interval_method, p.cutoff
            FROM {SCHEMA}.current_champions c
            LEFT JOIN {SCHEMA}.{SELECTION_DECISIONS} d
              ON d.series_id = c.series_id AND d.window_key = :window
            LEFT JOIN (
                SELECT DISTINCT ON (series_id) series_id, interval_method, cutoff
                FROM {SCHEMA}.{PUBLISHED_FORECASTS} WHERE window_key = :window
                ORDER BY series_id, step
            ) p ON p.series_id = c.series_id
            ORDER BY c.series_id LIMIT :limit
            """
        ),
        params,
    )
    return ChampionRows(total, [dict(row._mapping) for row in rows])


def driver_correlations(conn: Connection, window: str, max_series: int) -> pl.DataFrame:
    """`row, column, value`: Pearson correlation of the first `max_series` series with each driver."""
    frame = copy_query(
        conn,
        f"""
        WITH shown AS (
            SELECT DISTINCT series_id FROM {SCHEMA}.{CORRELATIONS}
            WHERE window_key = %s AND kind = 'driver' ORDER BY series_id LIMIT %s
        )
        SELECT series_id AS row, other AS column, pearson AS value
        FROM {SCHEMA}.{CORRELATIONS} JOIN shown USING (series_id)
        WHERE window_key = %s AND kind = 'driver' ORDER BY series_id, other
        """,
        (window, max_series, window),
    )
    return _typed(frame, {"row": pl.String, "column": pl.String, "value": pl.Float64})


def lagged_correlations(conn: Connection, window: str) -> pl.DataFrame:
    """`row, column, value`: median Pearson across series of each driver (row) per lead (column);
    rows are `group: driver` when the window has several frequency groups."""
    frame = copy_query(
        conn,
        f"""
        SELECT freq_group, other AS driver, lag, percentile_cont(0.5) WITHIN GROUP (ORDER BY pearson) AS value
        FROM {SCHEMA}.{CORRELATIONS}
        WHERE window_key = %s AND kind = 'lagged' AND pearson IS NOT NULL
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        """,
        (window,),
    )
    frame = _typed(
        frame, {"freq_group": pl.String, "driver": pl.String, "lag": pl.Int64, "value": pl.Float64}
    )
    several = frame["freq_group"].n_unique() > 1
    return frame.select(
        (pl.col("freq_group") + ": " + pl.col("driver") if several else pl.col("driver")).alias("row"),
        pl.col("lag").cast(pl.String).alias("column"),
        "value",
    )


def granger_rows(conn: Connection, window: str, max_series: int) -> list[dict[str, Any]]:
    """Every Granger test of the window's first `max_series` series (by id), with its adjusted p."""
    rows = conn.execute(
        text(
            f"""
            WITH shown AS (
                SELECT DISTINCT series_id FROM {SCHEMA}.{GRANGER_TESTS}
                WHERE window_key = :window ORDER BY series_id LIMIT :limit
            )
            SELECT series_id, cause, cause_kind, direction, testable, reason, lag, p_value, adjusted_p
            FROM {SCHEMA}.{GRANGER_TESTS} JOIN shown USING (series_id)
            WHERE window_key = :window
            ORDER BY series_id, cause_kind, cause, direction
            """
        ),
        {"window": window, "limit": max_series},
    )
    return [dict(row._mapping) for row in rows]


@dataclass(frozen=True)
class QualityRows:
    files_by_status: dict[str, int]
    newest_files: list[dict[str, Any]]
    quarantine_by_reason: list[dict[str, Any]]
    latest_checks: list[dict[str, Any]]


def quality_rows(conn: Connection, limit: int) -> QualityRows:
    """Landed files by status (and the newest `limit`), quarantined rows per reason, and the
    latest result of each data-quality check."""
    by_status = conn.execute(
        text(f"SELECT status, count(*) FROM {SCHEMA}.{LANDED_FILES} GROUP BY status ORDER BY status")
    ).all()
    files = conn.execute(
        text(
            f"""
            SELECT file_id, file_name, status, reason, rows_read, rows_accepted, rows_quarantined,
                   series_count, first_ts, last_ts, staged_at
            FROM {SCHEMA}.{LANDED_FILES} ORDER BY file_id DESC LIMIT :limit
            """
        ),
        {"limit": limit},
    )
    reasons = conn.execute(
        text(
            f"""
            SELECT reason, count(*) AS rows, count(DISTINCT file_id) AS files, max(quarantined_at) AS newest
            FROM {SCHEMA}.{QUARANTINE} GROUP BY reason ORDER BY rows DESC, reason LIMIT :limit
            """
        ),
        {"limit": limit},
    )
    checks = conn.execute(
        text(
            f"""
            SELECT DISTINCT ON (check_name) check_name, expectation, blocking, success, evaluated,
                   unexpected, unexpected_fraction, batch_id, checked_at,
                   details ->> 'description' AS description
            FROM {SCHEMA}.{DATA_QUALITY_RESULTS}
            ORDER BY check_name, checked_at DESC, result_id DESC
            """
        )
    )
    return QualityRows(
        {status: count for status, count in by_status},
        [dict(row._mapping) for row in files],
        [dict(row._mapping) for row in reasons],
        [dict(row._mapping) for row in checks],
    )


def _typed(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """COPY delivers text: cast to `schema` (and keep its columns when nothing matched)."""
    if frame.height == 0:
        return pl.DataFrame(schema=schema)
    return frame.select(
        pl.col(name).str.to_datetime(_TIMESTAMP_FORMAT, time_unit="us")
        if dtype == pl.Datetime("us")
        else pl.col(name).cast(dtype)
        for name, dtype in schema.items()
    )
