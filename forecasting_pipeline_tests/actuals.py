"""Actuals for published forecasts, landed as a user's next file would be: how tests make the
accuracy scoring (and the drift sensor) see real forecasts meet chosen outcomes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import polars as pl

from forecasting_pipeline_tests.conftest import query_frame

DRIVERS = pl.Struct({"gen_forecast": pl.Float64, "system_load": pl.Float64, "week_day": pl.Int64})


def land_actuals(engine, landing: Path, window: str, factors: dict[str, float], name: str) -> pd.DataFrame:
    """Write a CSV of actuals for every forecast published for `window`: each series' forecast
    times its factor (1 when absent), drivers copied from the same hour a day earlier.

    Returns the published forecasts the actuals were made from (series_id, ds, yhat).
    """
    published = query_frame(
        engine,
        "SELECT series_id, ds, yhat FROM forecasting.published_forecasts WHERE window_key = :w",
        w=window,
    )
    first_ds = published.ds.min()
    drivers = query_frame(
        engine,
        "SELECT series_id, ts, drivers::text AS drivers FROM forecasting.observations WHERE ts >= :since",
        since=first_ds - pd.Timedelta(days=1),
    )
    factor = pl.col("series_id").replace_strict(factors, default=1.0, return_dtype=pl.Float64)
    actuals = (
        pl.from_pandas(published)
        .with_columns(pl.col("ds").cast(pl.Datetime("us")))
        .with_columns((pl.col("yhat") * factor).alias("y"))
    )
    day_before = (
        pl.from_pandas(drivers)
        .with_columns(
            pl.col("ts").cast(pl.Datetime("us")) + pl.duration(days=1),
            pl.col("drivers").str.json_decode(DRIVERS),
        )
        .unnest("drivers")
        .rename({"ts": "ds"})
    )
    landed = actuals.join(day_before, on=["series_id", "ds"], how="left").select(
        pl.col("series_id").alias("unique_id"), "ds", "y", pl.exclude("series_id", "ds", "y", "yhat")
    )
    landed.write_csv(landing / name)
    return published
