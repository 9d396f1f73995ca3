"""Rolling-origin backtests of catalog families; no Dagster and no database in here.

Each fold trains only on the data up to its cutoff: statsforecast refits (or moves its fitted
state forward) per window, neuralforecast trains on everything before the first cutoff and
forecasts later folds from their own input windows. Both libraries place the cutoffs from each
series' own end, so ragged panels are backtested per series.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import polars as pl

from forecasting_pipeline.modeling.catalog import (
    FamilySpec,
    NeuralShape,
    build_local_model,
    build_neural_model,
)
from forecasting_pipeline.modeling.fitting import neural_columns
from forecasting_pipeline.modeling.forecast_frame import FOLD_COLUMNS, fold_frame
from forecasting_pipeline.schemas import DS, INTERVAL_LEVELS, UNIQUE_ID, Y


@dataclass(frozen=True)
class FoldPlan:
    """Where the folds of a group's backtest fall: `n_windows` origins `step_size` apart."""

    horizon: int
    n_windows: int
    step_size: int
    refit: bool | int

    @property
    def test_size(self) -> int:
        """Points at the end of each series that some fold forecasts."""
        return self.horizon + self.step_size * (self.n_windows - 1)


def affordable_folds(panel: pl.DataFrame, plan: FoldPlan, min_train: int) -> pl.DataFrame:
    """`unique_id, points, folds`: how many of the plan's folds each series can afford.

    A fold needs `min_train` points before its cutoff. A series too short for the whole plan
    gets the folds it can afford (the latest ones), 0 when even one would train on too little.
    Backtesting only the series long enough for every fold would leave most of a typical
    competition panel (M1 monthly: 355 of 580 series at 3 folds of 18) without any evidence.
    """
    return (
        panel.group_by(UNIQUE_ID)
        .agg(pl.len().cast(pl.Int64).alias("points"))
        .with_columns(
            ((pl.col("points") - min_train - plan.horizon) // plan.step_size + 1)
            .clip(0, plan.n_windows)
            .cast(pl.Int64)
            .alias("folds")
        )
        .sort(UNIQUE_ID)
    )


def cross_validate_local(
    history: pd.DataFrame,
    families: Sequence[tuple[FamilySpec, Mapping[str, Any]]],
    *,
    freq: str,
    season: int,
    plan: FoldPlan,
    n_jobs: int,
) -> tuple[pl.DataFrame, dict[str, str]]:
    """(folds of every local family, family -> error of those that failed).

    One StatsForecast call covers all families; if it fails each family is retried alone (then
    without its conformal intervals, which need two horizons of history inside each fold), so one
    failing family costs only its own folds.
    """
    from statsforecast import StatsForecast

    frame = history[[UNIQUE_ID, DS, Y]]

    def folds_of(
        selected: Sequence[tuple[FamilySpec, Mapping[str, Any]]], intervals: bool = True
    ) -> pl.DataFrame:
        models = [
            build_local_model(spec, params, season, plan.horizon, intervals=intervals)
            for spec, params in selected
        ]
        raw = StatsForecast(models=models, freq=freq, n_jobs=n_jobs).cross_validation(
            h=plan.horizon,
            df=frame,
            n_windows=plan.n_windows,
            step_size=plan.step_size,
            level=list(INTERVAL_LEVELS) if intervals else None,
            refit=plan.refit,
        )
        return pl.concat([fold_frame(raw, spec, with_bounds=intervals) for spec, _ in selected])

    if not families:
        return empty_folds(), {}
    try:
        return folds_of(families), {}
    except Exception:  # noqa: S110 - each family is retried alone below, where its error is kept
        pass
    parts: list[pl.DataFrame] = []
    failed: dict[str, str] = {}
    for spec, params in families:
        try:
            parts.append(folds_of([(spec, params)]))
        except Exception:
            # Conformal intervals need more history than a fold may hold (two horizons per
            # fold): score the point forecast; the folds calibrate published intervals anyway.
            try:
                parts.append(folds_of([(spec, params)], intervals=False))
            except Exception as exc:
                failed[spec.name] = f"{type(exc).__name__}: {exc}"
    return (pl.concat(parts) if parts else empty_folds()), failed


def cross_validate_neural(
    panel: pd.DataFrame,
    spec: FamilySpec,
    params: Mapping[str, Any],
    shape: NeuralShape,
    *,
    freq: str,
    plan: FoldPlan,
) -> pl.DataFrame:
    """Folds of one neural family trained across the group's series up to the first cutoff.

    `refit` retrains every `refit` windows (True: every window) on the data up to that window's
    cutoff; future-known drivers inside a fold come from the stored rows after its cutoff, as
    they would have been published then.
    """
    from neuralforecast import NeuralForecast

    forecaster = NeuralForecast(models=[build_neural_model(spec, params, shape)], freq=freq)
    raw = forecaster.cross_validation(
        df=panel[neural_columns(shape)],
        n_windows=plan.n_windows,
        step_size=plan.step_size,
        refit=plan.refit,
    )
    return fold_frame(raw, spec)


def empty_folds() -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {column: pl.Float64 for column in FOLD_COLUMNS}
    schema.update(
        {
            UNIQUE_ID: pl.String,
            "model_name": pl.String,
            "cutoff": pl.Datetime("us"),
            DS: pl.Datetime("us"),
            "step": pl.Int64,
        }
    )
    return pl.DataFrame(schema=schema)
