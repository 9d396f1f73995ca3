"""Forecast history: one row per series, model family, forecast origin and step.

Re-forecasting the same origin replaces its rows; a forecast from a later origin adds rows
beside the earlier ones, so every published forecast can be scored against the actuals that
arrive after it. `forecasting.current_predictions` shows each series' newest origin per family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.schemas import DS, FORECAST_COLUMNS, INTERVAL_COLUMNS, UNIQUE_ID, require_columns
from forecasting_pipeline.storage.bulk import copy_into_scratch, copy_query
from forecasting_pipeline.storage.tables import FORECAST_EXCLUSIONS, PREDICTIONS, PUBLISHED_FORECASTS, SCHEMA

_KEY = ("series_id", "model_name", "cutoff", "step")
# Besides FORECAST_COLUMNS, what a stored forecast carries for lineage.
LINEAGE_COLUMNS = ("window_key", "partition_key", "model_id", "freq_group")

_COLUMNS = (
    "series_id",
    "window_key",
    "partition_key",
    "model_name",
    "model_version",
    "model_id",
    "freq_group",
    "cutoff",
    "step",
    "ds",
    "yhat",
    *INTERVAL_COLUMNS,
    "dagster_run_id",
)


def store_predictions(conn: Connection, forecasts: pd.DataFrame | pl.DataFrame, run_id: str) -> int:
    """Write a run's forecasts in three statements, whatever the number of series.

    Rows are COPYed to a temporary table and upserted on (series, family, origin, step); steps
    an origin held beyond the new horizon are deleted. Rows of other families and other origins
    are never touched, so families written by concurrent runs do not mix.
    """
    frame = forecasts if isinstance(forecasts, pl.DataFrame) else pl.from_pandas(forecasts)
    require_columns(frame, (*FORECAST_COLUMNS, *LINEAGE_COLUMNS), "forecast frame")
    frame = frame.rename({UNIQUE_ID: "series_id"}).with_columns(
        pl.lit(run_id).alias("dagster_run_id"),
        pl.col("step").cast(pl.Int64),
        pl.col("model_id").cast(pl.Int64),
    )
    if frame.height == 0:
        return 0
    copy_into_scratch(conn, "_predictions_in", f"{SCHEMA}.{PREDICTIONS}", frame, _COLUMNS)
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
            USING (
                SELECT series_id, model_name, cutoff, max(step) AS max_step
                FROM _predictions_in GROUP BY series_id, model_name, cutoff
            ) kept
            WHERE p.series_id = kept.series_id AND p.model_name = kept.model_name
              AND p.cutoff = kept.cutoff AND p.step > kept.max_step
            """
        )
    )
    return frame.height


@dataclass(frozen=True)
class PublicationSummary:
    families: list[dict]  # model_name, series, rows, newest_origin
    covered: int  # series with at least one family's forecast
    set_aside: dict[str, int]  # exclusion reason -> series


def publication_summary(
    conn: Connection, windows: Sequence[str], series_ids: Sequence[str]
) -> PublicationSummary:
    """What the windows' families forecast for these series, and why the others have none."""
    params = {"windows": list(windows), "ids": list(series_ids)}
    scope = "window_key = ANY(:windows) AND series_id = ANY(:ids)"
    families = conn.execute(
        text(
            f"SELECT model_name, count(DISTINCT series_id) AS series, count(*) AS rows, "
            f"max(cutoff) AS newest_origin FROM {SCHEMA}.{PREDICTIONS} WHERE {scope} "
            "GROUP BY model_name ORDER BY model_name"
        ),
        params,
    )
    covered = conn.execute(
        text(f"SELECT count(DISTINCT series_id) FROM {SCHEMA}.{PREDICTIONS} WHERE {scope}"), params
    ).scalar_one()
    set_aside = conn.execute(
        text(f"SELECT reason, count(*) FROM {SCHEMA}.{FORECAST_EXCLUSIONS} WHERE {scope} GROUP BY reason"),
        params,
    )
    return PublicationSummary(
        [dict(row._mapping) for row in families], covered, {reason: n for reason, n in set_aside}
    )


def forecast_summary(conn: Connection, window_key: str) -> list[dict]:
    """First step and mean of every series' published champion forecast, for a window."""
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
                   avg(hi_95 - lo_95) AS mean_width_95,
                   min(interval_method) AS interval_method
            FROM {SCHEMA}.{PUBLISHED_FORECASTS}
            WHERE window_key = :window_key
            GROUP BY series_id, model_name, model_version, cutoff
            ORDER BY series_id, model_name
            """
        ),
        {"window_key": window_key},
    )
    return [dict(row._mapping) for row in result]


def window_forecasts(
    conn: Connection, window_key: str, series_ids: Sequence[str], model_names: Sequence[str]
) -> pl.DataFrame:
    """The window's newest-origin forecasts of these series and models, as a forecast frame.

    Read by COPY in one statement; `unique_id` is the series id.
    """
    frame = copy_query(
        conn,
        f"""
        SELECT series_id AS {UNIQUE_ID}, model_name, model_version, model_id, cutoff, step, ds,
               yhat, {", ".join(INTERVAL_COLUMNS)}
        FROM (
            SELECT p.*, max(cutoff) OVER (PARTITION BY series_id, model_name) AS newest
            FROM {SCHEMA}.{PREDICTIONS} p
            WHERE window_key = %s AND series_id = ANY(%s) AND model_name = ANY(%s)
        ) w
        WHERE cutoff = newest ORDER BY series_id, model_name, step
        """,
        (window_key, list(series_ids), list(model_names)),
    )
    return _typed_forecasts(frame)


def _typed_forecasts(frame: pl.DataFrame) -> pl.DataFrame:
    """COPY delivers text: give a forecast frame its types (empty frames included)."""
    schema = {
        UNIQUE_ID: pl.String,
        "model_name": pl.String,
        "model_version": pl.String,
        "model_id": pl.Int64,
        "cutoff": pl.Datetime("us"),
        "step": pl.Int64,
        DS: pl.Datetime("us"),
        "yhat": pl.Float64,
        **{column: pl.Float64 for column in INTERVAL_COLUMNS},
    }
    if frame.height == 0:
        return pl.DataFrame(schema={c: t for c, t in schema.items() if c in frame.columns or not frame.width})
    return frame.with_columns(
        [
            pl.col(c).str.to_datetime(time_unit="us") if t == pl.Datetime("us") else pl.col(c).cast(t)
            for c, t in schema.items()
            if c in frame.columns
        ]
    )


def window_candidates(conn: Connection, window_key: str, series_ids: Sequence[str]) -> pl.DataFrame:
    """`series_id, freq_group, model_name`: the candidates the window has forecasts from, per series."""
    frame = copy_query(
        conn,
        f"SELECT DISTINCT series_id, freq_group, model_name FROM {SCHEMA}.{PREDICTIONS} "
        "WHERE window_key = %s AND series_id = ANY(%s) AND freq_group IS NOT NULL",
        (window_key, list(series_ids)),
    )
    return (
        frame
        if frame.width
        else pl.DataFrame(schema={"series_id": pl.String, "freq_group": pl.String, "model_name": pl.String})
    )
