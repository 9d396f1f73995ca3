"""Fit catalog models on long-format frames; no Dagster and no database in here.

The assets decide what to fit (which window, which series) and where results go; these
functions only turn history into wide library forecasts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from forecasting_pipeline.modeling.catalog import GlobalModelParams, GlobalModelSpec, LocalModelSpec
from forecasting_pipeline.modeling.frequency import season_length
from forecasting_pipeline.schemas import DS, INTERVAL_LEVELS, UNIQUE_ID, Y


@dataclass
class GlobalFit:
    forecaster: Any  # the fitted NeuralForecast object, kept to save its weights
    raw_forecast: pd.DataFrame
    train_losses: list[float]


def fit_global_model(
    panel: pd.DataFrame,
    spec: GlobalModelSpec,
    params: GlobalModelParams,
    freq: str,
    trainer_kwargs: dict[str, Any],
) -> GlobalFit:
    """Train one neural model across every series of `panel` and forecast each from its end."""
    from neuralforecast import NeuralForecast

    forecaster = NeuralForecast(models=[spec.build(params, trainer_kwargs)], freq=freq)
    forecaster.fit(df=panel[[UNIQUE_ID, DS, Y]])
    raw = forecaster.predict()
    trajectory = getattr(forecaster.models[0], "train_trajectories", [])
    return GlobalFit(forecaster, raw, [float(loss) for _, loss in trajectory])


@dataclass
class LocalFit:
    season: int
    fitted: pd.DataFrame  # the history of the series that were fitted
    raw_forecast: pd.DataFrame | None
    too_short: list[str] = field(default_factory=list)


def fit_local_model(history: pd.DataFrame, spec: LocalModelSpec, freq: str, horizon: int) -> LocalFit:
    """Fit a statistical model per series, all series in one call.

    Series shorter than one season cannot be fitted by seasonal models; they are skipped and
    named, not allowed to fail the others.
    """
    from statsforecast import StatsForecast

    season = season_length(freq)
    lengths = history.groupby(UNIQUE_ID).size()
    too_short = sorted(lengths[lengths < season].index)
    fitted = history.loc[~history[UNIQUE_ID].isin(too_short), [UNIQUE_ID, DS, Y]]
    if fitted.empty:
        return LocalFit(season, fitted, None, too_short)
    raw = StatsForecast(models=[spec.build(season)], freq=freq, n_jobs=1).forecast(
        df=fitted, h=horizon, level=list(INTERVAL_LEVELS)
    )
    return LocalFit(season, fitted, raw, too_short)
