"""Forecast rows: one per series, window, model and step; a re-run replaces, never duplicates."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Connection, text

from forecasting_pipeline.schemas import DS, FORECAST_COLUMNS, UNIQUE_ID, require_columns
from forecasting_pipeline.storage.tables import PREDICTIONS, SCHEMA, upsert


def upsert_predictions(
    conn: Connection, forecasts: pd.DataFrame, *, window_key: str, partition_key: str, run_id: str
) -> int:
    require_columns(forecasts, FORECAST_COLUMNS, "forecast frame")
    frame = forecasts.rename(columns={UNIQUE_ID: "series_id"}).assign(
        window_key=window_key, partition_key=partition_key, dagster_run_id=run_id
    )
    frame = frame.astype(object).where(frame.notna(), None)
    for column in (DS, "cutoff"):
        frame[column] = [pd.Timestamp(v).to_pydatetime() for v in frame[column]]
    frame["step"] = frame["step"].astype(int)
    return upsert(
        conn,
        PREDICTIONS,
        frame.to_dict("records"),
        key_columns=("series_id", "window_key", "model_name", "step"),
    )


def delete_stale_predictions(
    conn: Connection, *, series_id: str, window_key: str, model_names: list[str], max_step: int
) -> int:
    """Drop rows a shorter horizon or a retired model left behind in this partition."""
    result = conn.execute(
        text(
            f"DELETE FROM {SCHEMA}.{PREDICTIONS} WHERE series_id = :series_id "
            "AND window_key = :window_key AND (step > :max_step OR NOT (model_name = ANY(:models)))"
        ),
        {
            "series_id": series_id,
            "window_key": window_key,
            "max_step": max_step,
            "models": model_names,
        },
    )
    return result.rowcount


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
