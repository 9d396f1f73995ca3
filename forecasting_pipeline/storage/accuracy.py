"""Stored forecasts scored against the actuals that arrived later, and drift decisions.

Scoring is one statement per run over all its cells: the actuals of each cell joined to every
forecast any candidate made for those timestamps from an earlier origin (the forecast history
keeps every origin), marked where the model was the series' champion at that origin. Scaled errors use the
series' scale at the forecast origin (the denominator its backtest MASE used), so a live error
and its backtest estimate are the same quantity.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.storage.observations import Cell, load_cells
from forecasting_pipeline.storage.tables import (
    BACKTEST_METRICS,
    CHAMPION_EVENTS,
    DRIFT_EVENTS,
    FORECAST_ACCURACY,
    OBSERVATIONS,
    PREDICTIONS,
    SCHEMA,
    SERIES_SCALES,
)


def score_cells(conn: Connection, cells: Sequence[Cell], run_id: str) -> int:
    """Replace the accuracy rows of `cells`; returns how many (cell, origin) rows were scored."""
    load_cells(conn, cells)
    conn.exec_driver_sql(
        f"DELETE FROM {SCHEMA}.{FORECAST_ACCURACY} a USING _cells c "
        "WHERE a.series_id = c.series_id AND a.window_key = c.window_key"
    )
    return conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{FORECAST_ACCURACY}
                (series_id, window_key, cutoff, model_name, origin_window, model_version, champion, points,
                 mae, rmse, smape, mase, coverage_80, coverage_95, backtest_mase, dagster_run_id)
            SELECT s.series_id, s.window_key, s.cutoff, s.model_name, s.origin_window, s.model_version,
                   coalesce(ch.model_name = s.model_name, false), s.points, s.mae, s.rmse, s.smape,
                   s.mae / NULLIF(sc.scale, 0), s.coverage_80, s.coverage_95, bm.value, :run_id
            FROM (
                SELECT c.series_id, c.window_key, p.cutoff, p.model_name,
                       min(p.window_key) AS origin_window, min(p.model_version) AS model_version,
                       count(*) AS points,
                       avg(abs(o.y - p.yhat)) AS mae, sqrt(avg((o.y - p.yhat) ^ 2)) AS rmse,
                       200 * avg(abs(o.y - p.yhat) / NULLIF(abs(o.y) + abs(p.yhat), 0)) AS smape,
                       avg(CASE WHEN p.lo_80 IS NULL THEN NULL
                                WHEN o.y BETWEEN p.lo_80 AND p.hi_80 THEN 1.0 ELSE 0.0 END) AS coverage_80,
                       avg(CASE WHEN p.lo_95 IS NULL THEN NULL
                                WHEN o.y BETWEEN p.lo_95 AND p.hi_95 THEN 1.0 ELSE 0.0 END) AS coverage_95
                FROM _cells c
                JOIN {SCHEMA}.{OBSERVATIONS} o
                  ON o.series_id = c.series_id AND o.ts >= c.start_ts AND o.ts < c.end_ts
                JOIN {SCHEMA}.{PREDICTIONS} p
                  ON p.series_id = o.series_id AND p.ds = o.ts AND p.cutoff < o.ts
                GROUP BY c.series_id, c.window_key, p.cutoff, p.model_name
            ) s
            LEFT JOIN LATERAL (
                SELECT e.model_name FROM {SCHEMA}.{CHAMPION_EVENTS} e
                WHERE e.series_id = s.series_id AND e.window_key <= s.origin_window
                ORDER BY e.window_key DESC, e.event_id DESC LIMIT 1
            ) ch ON true
            LEFT JOIN {SCHEMA}.{SERIES_SCALES} sc
              ON sc.series_id = s.series_id AND sc.window_key = s.origin_window
            LEFT JOIN {SCHEMA}.{BACKTEST_METRICS} bm
              ON bm.window_key = s.origin_window AND bm.series_id = s.series_id
             AND bm.model_name = s.model_name AND bm.metric = 'mase' AND bm.step IS NULL
            """
        ),
        {"run_id": run_id},
    ).rowcount


def drift_candidates(conn: Connection, threshold: float, windows: int) -> pl.DataFrame:
    """Series whose rolling scaled error over their newest `windows` scored windows exceeds
    `threshold` × the backtest estimate of the forecasts scored, and not yet acted on.

    series_id, partition_key, window_key (newest scored), rolling_mase, backtest_mase, ratio,
    windows_scored.
    """
    rows = conn.execute(
        text(
            f"""
            WITH ranked AS (
                SELECT a.*, dense_rank() OVER (PARTITION BY a.series_id ORDER BY a.window_key DESC) AS recency
                FROM {SCHEMA}.{FORECAST_ACCURACY} a
                WHERE a.champion AND a.mase IS NOT NULL AND a.backtest_mase > 0
            ), rolling AS (
                SELECT series_id, max(window_key) AS window_key,
                       sum(mase * points) / sum(points) AS rolling_mase,
                       sum(backtest_mase * points) / sum(points) AS backtest_mase,
                       count(DISTINCT window_key) AS windows_scored
                FROM ranked WHERE recency <= :windows GROUP BY series_id
            )
            SELECT r.series_id, s.partition_key, r.window_key, r.rolling_mase, r.backtest_mase,
                   r.rolling_mase / r.backtest_mase AS ratio, r.windows_scored
            FROM rolling r
            JOIN {SCHEMA}.series s ON s.series_id = r.series_id
            LEFT JOIN {SCHEMA}.{DRIFT_EVENTS} d ON d.series_id = r.series_id AND d.window_key = r.window_key
            WHERE d.series_id IS NULL AND r.rolling_mase > :threshold * r.backtest_mase
            ORDER BY r.series_id
            """
        ),
        {"threshold": threshold, "windows": windows},
    ).all()
    return pl.DataFrame(
        [tuple(r) for r in rows],
        schema={
            "series_id": pl.Utf8,
            "partition_key": pl.Utf8,
            "window_key": pl.Utf8,
            "rolling_mase": pl.Float64,
            "backtest_mase": pl.Float64,
            "ratio": pl.Float64,
            "windows_scored": pl.Int64,
        },
        orient="row",
    )


def record_drift(conn: Connection, drifted: pl.DataFrame, threshold: float, request_id: str) -> None:
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{DRIFT_EVENTS}
                (series_id, window_key, rolling_mase, backtest_mase, ratio, windows_scored, threshold,
                 request_id)
            SELECT *, :threshold, :request_id FROM unnest(
                CAST(:ids AS text[]), CAST(:windows AS text[]), CAST(:rolling AS double precision[]),
                CAST(:backtest AS double precision[]), CAST(:ratio AS double precision[]),
                CAST(:scored AS integer[]))
                AS d(series_id, window_key, rolling_mase, backtest_mase, ratio, windows_scored)
            """
        ),
        {
            "threshold": threshold,
            "request_id": request_id,
            "ids": drifted["series_id"].to_list(),
            "windows": drifted["window_key"].to_list(),
            "rolling": drifted["rolling_mase"].to_list(),
            "backtest": drifted["backtest_mase"].to_list(),
            "ratio": drifted["ratio"].to_list(),
            "scored": drifted["windows_scored"].to_list(),
        },
    )


def drift_rows(conn: Connection, request_id: str) -> pl.DataFrame:
    """series_id, partition_key, window_key of a drift request's events."""
    rows = conn.execute(
        text(
            f"""
            SELECT d.series_id, s.partition_key, d.window_key
            FROM {SCHEMA}.{DRIFT_EVENTS} d JOIN {SCHEMA}.series s ON s.series_id = d.series_id
            WHERE d.request_id = :id
            """
        ),
        {"id": request_id},
    ).all()
    return pl.DataFrame(
        [tuple(r) for r in rows],
        schema={"series_id": pl.Utf8, "partition_key": pl.Utf8, "window_key": pl.Utf8},
        orient="row",
    )
