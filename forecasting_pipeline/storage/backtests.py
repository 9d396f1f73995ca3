"""Backtest folds, their metrics, interval calibration and series scales.

A backtest of a window replaces that window's rows for the series (and frequency group) it
covers, in one transaction: delete the slice, COPY the new rows. A re-run therefore never
duplicates rows and never leaves folds of a fold plan that changed in between.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.schemas import INTERVAL_COLUMNS, UNIQUE_ID
from forecasting_pipeline.storage.bulk import copy_frame, copy_query
from forecasting_pipeline.storage.tables import (
    BACKTEST_FOLDS,
    BACKTEST_METRICS,
    ENSEMBLE_MEMBERS,
    INTERVAL_CALIBRATION,
    SCHEMA,
    SERIES_SCALES,
)

FOLD_TABLE_COLUMNS = (
    "series_id",
    "window_key",
    "partition_key",
    "freq_group",
    "model_name",
    "candidate",
    "model_version",
    "model_id",
    "fold",
    "cutoff",
    "step",
    "ds",
    "y",
    "yhat",
    *INTERVAL_COLUMNS,
    "dagster_run_id",
)
_METRIC_COLUMNS = (
    "window_key",
    "freq_group",
    "series_id",
    "model_name",
    "step",
    "metric",
    "value",
    "dagster_run_id",
)
_CALIBRATION_COLUMNS = (
    "window_key",
    "freq_group",
    "model_name",
    "step",
    "level",
    "quantile",
    "samples",
    "method",
    "heldout_coverage",
    "dagster_run_id",
)


def replace_backtest(
    conn: Connection,
    *,
    window: str,
    group: str,
    series_ids: Sequence[str],
    folds: pl.DataFrame,
    metrics: pl.DataFrame,
    calibration: pl.DataFrame,
    scales: pl.DataFrame,
    run_id: str,
) -> int:
    """Replace one (window, group)'s backtest of `series_ids`; returns fold rows written.

    `folds` carries FOLD_TABLE_COLUMNS except the run id (with `unique_id` for series_id);
    `metrics` series-level rows (series_id set) and group-level rows (series_id null);
    `calibration` and `scales` the group's conformal quantiles and the series' scales.
    Group-level rows describe the series of this run: a run over part of a group replaces them.
    """
    ids = list(series_ids)
    slice_params = {"window": window, "ids": ids, "group": group}
    for table, scope in (
        (BACKTEST_FOLDS, "window_key = :window AND series_id = ANY(:ids)"),
        (
            BACKTEST_METRICS,
            "window_key = :window AND freq_group = :group AND (series_id = ANY(:ids) OR series_id IS NULL)",
        ),
        (INTERVAL_CALIBRATION, "window_key = :window AND freq_group = :group"),
        (SERIES_SCALES, "window_key = :window AND series_id = ANY(:ids)"),
    ):
        conn.execute(text(f"DELETE FROM {SCHEMA}.{table} WHERE {scope}"), slice_params)
    run = pl.lit(run_id).alias("dagster_run_id")
    written = copy_frame(
        conn,
        f"{SCHEMA}.{BACKTEST_FOLDS}",
        folds.rename({UNIQUE_ID: "series_id"}).with_columns(run),
        FOLD_TABLE_COLUMNS,
    )
    copy_frame(conn, f"{SCHEMA}.{BACKTEST_METRICS}", metrics.with_columns(run), _METRIC_COLUMNS)
    copy_frame(conn, f"{SCHEMA}.{INTERVAL_CALIBRATION}", calibration.with_columns(run), _CALIBRATION_COLUMNS)
    _copy_scales(conn, window, scales, run_id)
    return written


def replace_series_scales(conn: Connection, window: str, scales: pl.DataFrame, run_id: str) -> int:
    """The window's MASE scale of these series (`unique_id, scale`), replacing earlier ones."""
    conn.execute(
        text(f"DELETE FROM {SCHEMA}.{SERIES_SCALES} WHERE window_key = :window AND series_id = ANY(:ids)"),
        {"window": window, "ids": scales[UNIQUE_ID].to_list()},
    )
    return _copy_scales(conn, window, scales, run_id)


def _copy_scales(conn: Connection, window: str, scales: pl.DataFrame, run_id: str) -> int:
    frame = scales.rename({UNIQUE_ID: "series_id"}).with_columns(
        pl.lit(window).alias("window_key"), pl.lit(run_id).alias("dagster_run_id")
    )
    return copy_frame(
        conn, f"{SCHEMA}.{SERIES_SCALES}", frame, ("series_id", "window_key", "scale", "dagster_run_id")
    )


def series_metrics(conn: Connection, window: str, series_ids: Sequence[str], metric: str) -> pl.DataFrame:
    """`series_id, freq_group, model_name, value` of one metric for the window's series."""
    frame = copy_query(
        conn,
        f"SELECT series_id, freq_group, model_name, value FROM {SCHEMA}.{BACKTEST_METRICS} "
        "WHERE window_key = %s AND series_id = ANY(%s) AND step IS NULL AND metric = %s "
        "AND value IS NOT NULL",
        (window, list(series_ids), metric),
    )
    return _with_float_values(frame, ("series_id", "freq_group", "model_name"))


def _with_float_values(frame: pl.DataFrame, text_columns: tuple[str, ...]) -> pl.DataFrame:
    """COPY delivers text: values as floats, and the same schema when nothing matched."""
    if frame.width == 0:
        return pl.DataFrame(schema={**{c: pl.String for c in text_columns}, "value": pl.Float64})
    return frame.with_columns(pl.col("value").cast(pl.Float64))


def group_metrics(conn: Connection, windows: Sequence[str]) -> pl.DataFrame:
    """`window_key, freq_group, model_name, metric, value` of the windows' group-level rows."""
    frame = copy_query(
        conn,
        f"SELECT window_key, freq_group, model_name, metric, value FROM {SCHEMA}.{BACKTEST_METRICS} "
        "WHERE window_key = ANY(%s) AND series_id IS NULL AND step IS NULL ORDER BY 1, 2, 4, 5",
        (list(windows),),
    )
    return _with_float_values(frame, ("window_key", "freq_group", "model_name", "metric"))


def replace_ensemble_members(
    conn: Connection, window: str, series_ids: Sequence[str], members: pl.DataFrame, run_id: str
) -> int:
    """The members each series' ensembles combine in this window (`unique_id, ensemble_name, model_name`)."""
    conn.execute(
        text(f"DELETE FROM {SCHEMA}.{ENSEMBLE_MEMBERS} WHERE window_key = :window AND series_id = ANY(:ids)"),
        {"window": window, "ids": list(series_ids)},
    )
    frame = members.select(
        pl.col(UNIQUE_ID).alias("series_id"),
        pl.lit(window).alias("window_key"),
        pl.col("ensemble_name").alias("ensemble"),
        pl.col("model_name").alias("member"),
        pl.lit(run_id).alias("dagster_run_id"),
    )
    return copy_frame(conn, f"{SCHEMA}.{ENSEMBLE_MEMBERS}", frame, frame.columns)


def champion_fold_errors(conn: Connection, window: str) -> pl.DataFrame:
    """`unique_id, freq_group, cutoff, ds, step, error` of each series' current champion on the
    window's folds, the error scaled by the series' MASE scale so series pool fairly."""
    frame = copy_query(
        conn,
        f"""
        SELECT f.series_id AS {UNIQUE_ID}, f.freq_group, f.cutoff, f.ds, f.step,
               (f.y - f.yhat) / s.scale AS error
        FROM {SCHEMA}.{BACKTEST_FOLDS} f
        JOIN {SCHEMA}.current_champions c ON c.series_id = f.series_id AND c.model_name = f.model_name
        JOIN {SCHEMA}.{SERIES_SCALES} s ON s.series_id = f.series_id AND s.window_key = f.window_key
        WHERE f.window_key = %s AND s.scale > 0
        ORDER BY 1, 3, 4
        """,
        (window,),
    )
    schema = {
        UNIQUE_ID: pl.Utf8,
        "freq_group": pl.Utf8,
        "cutoff": pl.Datetime("ns"),
        "ds": pl.Datetime("ns"),
        "step": pl.Int32,
        "error": pl.Float64,
    }
    if frame.width == 0:
        return pl.DataFrame(schema=schema)
    return frame.with_columns(
        pl.col("cutoff", "ds").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="ns"),
        pl.col("step").cast(pl.Int32),
        pl.col("error").cast(pl.Float64),
    )


LEADERBOARD_METRICS = ("mase", "smape", "mae", "rmse", "scaled_mql", "coverage_80", "coverage_95")


def leaderboard_rows(
    conn: Connection, window: str | None, metric: str, series_id: str | None = None
) -> pl.DataFrame:
    """One row per (group, candidate) — or per candidate of one series — with the main metrics,
    sorted by `metric`; the window defaults to the newest with metrics."""
    scope = "series_id = %s" if series_id is not None else "series_id IS NULL"
    frame = copy_query(
        conn,
        f"""
        SELECT window_key, freq_group, model_name, metric, value FROM {SCHEMA}.{BACKTEST_METRICS}
        WHERE step IS NULL AND {scope} AND window_key = coalesce(
            %s, (SELECT max(window_key) FROM {SCHEMA}.{BACKTEST_METRICS}))
        """,
        ((series_id,) if series_id is not None else ()) + (window,),
    )
    if frame.height == 0:
        return frame
    wide = frame.with_columns(pl.col("value").cast(pl.Float64)).pivot(
        on="metric", index=["window_key", "freq_group", "model_name"], values="value"
    )
    if "series" not in wide.columns:
        wide = wide.with_columns(pl.lit(1.0).alias("series"))
    shown = [m for m in dict.fromkeys((metric, *LEADERBOARD_METRICS)) if m in wide.columns]
    return wide.select(
        "window_key", "freq_group", "model_name", *shown, pl.col("series").cast(pl.Int64)
    ).sort("freq_group", metric, "model_name", nulls_last=True)
