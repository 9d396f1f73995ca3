"""Forecast rows: one per series, window, model and step; a re-run replaces, never duplicates."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.schemas import DS, FORECAST_COLUMNS, INTERVAL_COLUMNS, UNIQUE_ID, require_columns
from forecasting_pipeline.storage.bulk import copy_frame
from forecasting_pipeline.storage.tables import PREDICTIONS, SCHEMA

_KEY = ("series_id", "window_key", "model_name", "step")


_COLUMNS = (
    "series_id",
    "window_key",
    "partition_key",
    "model_name",
    "model_version",
    "cutoff",
    "step",
    DS,
    "yhat",
    *INTERVAL_COLUMNS,
    "dagster_run_id",
)


def store_predictions(
    conn: Connection, forecasts: pd.DataFrame, cells: Sequence[tuple[str, str]], run_id: str
) -> int:
    """Write a run's forecasts for `cells` ((series id, window) pairs) in three statements.

    `forecasts` holds FORECAST_COLUMNS plus `window_key` and `partition_key`. Rows are COPYed,
    upserted on (series, window, model, step), and whatever a cell held beyond them — a longer
    horizon, a retired model, or everything when the cell has no forecast now — is deleted.
    """
    require_columns(forecasts, (*FORECAST_COLUMNS, "window_key", "partition_key"), "forecast frame")
    frame = pl.from_pandas(forecasts.rename(columns={UNIQUE_ID: "series_id"})).with_columns(
        pl.lit(run_id).alias("dagster_run_id"), pl.col("step").cast(pl.Int64)
    )
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS _predictions_in (LIKE {SCHEMA}.{PREDICTIONS} INCLUDING DEFAULTS) "
        "ON COMMIT DROP"
    )
    conn.exec_driver_sql("TRUNCATE _predictions_in")
    copy_frame(conn, "_predictions_in", frame, _COLUMNS)
    columns = ", ".join(_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c not in _KEY)
    conn.execute(
        text(
            f"INSERT INTO {SCHEMA}.{PREDICTIONS} ({columns}) SELECT {columns} FROM _predictions_in "
            f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}, created_at = now()"
        )
    )
    conn.execute(
        text(
            f"""
            DELETE FROM {SCHEMA}.{PREDICTIONS} p
            USING unnest(CAST(:ids AS text[]), CAST(:windows AS text[])) AS c(series_id, window_key)
            LEFT JOIN (
                SELECT series_id, window_key, max(step) AS max_step, array_agg(DISTINCT model_name) AS models
                FROM _predictions_in GROUP BY series_id, window_key
            ) kept ON kept.series_id = c.series_id AND kept.window_key = c.window_key
            WHERE p.series_id = c.series_id AND p.window_key = c.window_key
              AND (kept.series_id IS NULL OR p.step > kept.max_step OR NOT (p.model_name = ANY(kept.models)))
            """
        ),
        {"ids": [series_id for series_id, _ in cells], "windows": [window for _, window in cells]},
    )
    return frame.height


def forecast_summary(conn: Connection, window_key: str) -> list[dict]:
    """First and last step of every series' forecast per model, for a window."""
    result = conn.execute(
        text(
            f"""
            SELECT series_id, model_name, model_version, cutoff,
                   count(*) AS steps,
                   min(ds) AS first_ds, max(ds) AS last_ds,
                   (array_agg(yhat ORDER BY step))[1] AS first_yhat,
                   (array_agg(lo_95 ORDER BY step))[1] AS first_lo_95,
                   (array_agg(hi_95 ORDER BY step))[1] AS first_hi_95,
                   avg(yhat) AS mean_yhat,
                   avg(hi_80 - lo_80) AS mean_width_80,
                   avg(hi_95 - lo_95) AS mean_width_95
            FROM {SCHEMA}.{PREDICTIONS}
            WHERE window_key = :window_key
            GROUP BY series_id, model_name, model_version, cutoff
            ORDER BY series_id, model_name
            """
        ),
        {"window_key": window_key},
    )
    return [dict(row._mapping) for row in result]
