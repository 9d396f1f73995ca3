"""Turn each library's wide forecast output into the one long forecast frame.

neuralforecast names columns `NHITS-median`, `NHITS-lo-80`, …; statsforecast `SeasonalNaive`,
`SeasonalNaive-lo-80`, …. Everything downstream (predictions table, accuracy, selection) reads
`schemas.FORECAST_COLUMNS` instead.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd
import polars as pl

from forecasting_pipeline.schemas import (
    DS,
    FORECAST_COLUMNS,
    INTERVAL_COLUMNS,
    INTERVAL_LEVELS,
    UNIQUE_ID,
    lower_column,
    require_columns,
    upper_column,
)


def last_timestamps(panel: pd.DataFrame) -> pd.Series:
    """Each series' last observed timestamp: its forecast origin in a ragged panel."""
    return panel.groupby(UNIQUE_ID)[DS].max().rename("cutoff")


def _quantile_columns() -> list[str]:
    """Interval bounds and the point, from the lowest to the highest quantile."""
    lows = [lower_column(level) for level in sorted(INTERVAL_LEVELS, reverse=True)]
    highs = [upper_column(level) for level in sorted(INTERVAL_LEVELS)]
    return [*lows, "yhat", *highs]


def _rearrange_quantiles(frame: pd.DataFrame) -> None:
    """Sort each row's quantiles in place so intervals nest (lo_95 <= lo_80 <= yhat <= hi_80 ...).

    Quantile heads trained jointly (MQLoss) can cross, most of all early in training. Monotone
    rearrangement (Chernozhukov, Fernández-Val & Galichon, 2010) keeps the same set of values and
    never makes the quantile loss worse.
    """
    columns = _quantile_columns()
    frame[columns] = np.sort(frame[columns].to_numpy(dtype="float64"), axis=1)


def to_forecast_frame(
    raw: pd.DataFrame,
    *,
    point_column: str,
    interval_prefix: str,
    model_name: str,
    model_version: str,
    cutoffs: pd.Series,
) -> pd.DataFrame:
    """Normalize a wide forecast; `cutoffs` maps unique_id -> last observed timestamp."""
    frame = raw.reset_index() if UNIQUE_ID not in raw.columns else raw.copy()
    bounds = tuple(f"{interval_prefix}-{side}-{level}" for level in INTERVAL_LEVELS for side in ("lo", "hi"))
    require_columns(frame, (UNIQUE_ID, DS, point_column, *bounds), f"{model_name} forecast")
    out = pd.DataFrame(
        {
            UNIQUE_ID: frame[UNIQUE_ID].astype(str),
            DS: pd.to_datetime(frame[DS]),
            "yhat": frame[point_column].astype("float64"),
        }
    )
    for level in INTERVAL_LEVELS:
        out[lower_column(level)] = frame[f"{interval_prefix}-lo-{level}"].astype("float64")
        out[upper_column(level)] = frame[f"{interval_prefix}-hi-{level}"].astype("float64")
    _rearrange_quantiles(out)
    out = out.sort_values([UNIQUE_ID, DS], kind="stable")
    out["step"] = out.groupby(UNIQUE_ID).cumcount().astype("int64") + 1
    out["cutoff"] = out[UNIQUE_ID].map(cutoffs).astype("datetime64[ns]")
    out["model_name"] = model_name
    out["model_version"] = model_version
    return out.loc[:, list(FORECAST_COLUMNS)].reset_index(drop=True)


class _CatalogEntry(Protocol):
    name: str

    @property
    def point_column(self) -> str: ...


def catalog_forecast_frame(
    raw: pd.DataFrame, spec: _CatalogEntry, model_version: str, cutoffs: pd.Series
) -> pd.DataFrame:
    """`to_forecast_frame` for a catalog model: its columns are prefixed with its name."""
    return to_forecast_frame(
        raw,
        point_column=spec.point_column,
        interval_prefix=spec.name,
        model_name=spec.name,
        model_version=model_version,
        cutoffs=cutoffs,
    )


def future_grid(cutoffs: pd.Series, freq: str, horizon: int) -> pd.DataFrame:
    """unique_id, ds of each series' next `horizon` timestamps after its cutoff, on `freq`.

    One vectorized shift per step (the horizon is small), never a loop over series.
    """
    offset = pd.tseries.frequencies.to_offset(freq)
    origins = pd.DatetimeIndex(cutoffs.to_numpy())
    steps = [
        pd.DataFrame({UNIQUE_ID: cutoffs.index.to_numpy(), DS: origins + offset * step, "step": step})
        for step in range(1, horizon + 1)
    ]
    return pd.concat(steps, ignore_index=True).sort_values([UNIQUE_ID, "step"], kind="stable")


def restamp(frame: pd.DataFrame, series_freq: pl.DataFrame, model_freq: str) -> pd.DataFrame:
    """Re-date forecasts of series sampled on another alias of the group (W-MON in a W-SUN model).

    A model of a frequency group counts in steps; each series' step k is its own k-th timestamp
    after its cutoff. One pass per distinct alias (a handful), never per series.
    """
    others = series_freq.filter(pl.col("freq") != model_freq)
    if others.height == 0 or frame.empty:
        return frame
    frame = frame.copy()
    horizon = int(frame["step"].max())
    for (alias,), ids in others.group_by("freq"):
        rows = frame[UNIQUE_ID].isin(ids[UNIQUE_ID].to_list())
        cutoffs = frame.loc[rows].groupby(UNIQUE_ID)["cutoff"].first()
        grid = future_grid(cutoffs, alias, horizon)
        dated = frame.loc[rows, [UNIQUE_ID, "step"]].merge(grid, on=[UNIQUE_ID, "step"], how="left")
        frame.loc[rows, DS] = dated[DS].to_numpy()
    return frame


# A backtest fold frame: one row per series, candidate, fold cutoff and step, with the actual.
FOLD_COLUMNS: tuple[str, ...] = (
    UNIQUE_ID,
    "model_name",
    "cutoff",
    DS,
    "step",
    "y",
    "yhat",
    *INTERVAL_COLUMNS,
)


def fold_frame(raw: pd.DataFrame, spec: _CatalogEntry, *, with_bounds: bool = True) -> pl.DataFrame:
    """Normalize a library's `cross_validation` output (wide, with `cutoff` and `y`) to folds.

    Steps count from each fold's own cutoff per series, so ragged series and any step size
    line up by horizon step. Without bounds (a fold too short for a model's own intervals) the
    interval columns are null.
    """
    frame = raw.reset_index() if UNIQUE_ID not in raw.columns else raw
    bounds = tuple(f"{spec.name}-{side}-{level}" for level in INTERVAL_LEVELS for side in ("lo", "hi"))
    if not with_bounds:
        frame = frame.assign(**{bound: np.nan for bound in bounds})
    require_columns(frame, (UNIQUE_ID, DS, "cutoff", "y", spec.point_column, *bounds), f"{spec.name} folds")
    out = pd.DataFrame(
        {
            UNIQUE_ID: frame[UNIQUE_ID].astype(str),
            "cutoff": pd.to_datetime(frame["cutoff"]),
            DS: pd.to_datetime(frame[DS]),
            "y": frame["y"].astype("float64"),
            "yhat": frame[spec.point_column].astype("float64"),
        }
    )
    for level in INTERVAL_LEVELS:
        out[lower_column(level)] = frame[f"{spec.name}-lo-{level}"].astype("float64")
        out[upper_column(level)] = frame[f"{spec.name}-hi-{level}"].astype("float64")
    if with_bounds:
        _rearrange_quantiles(out)
    folds = pl.from_pandas(out, nan_to_null=True).with_columns(pl.lit(spec.name).alias("model_name"))
    return folds.with_columns(
        pl.col(DS).rank("ordinal").over(UNIQUE_ID, "cutoff").cast(pl.Int64).alias("step")
    ).select(FOLD_COLUMNS)
