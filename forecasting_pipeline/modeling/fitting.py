"""Fit catalog families on long-format frames; no Dagster and no database in here.

The assets decide what to fit (which window, group and series) and where results go; these
functions only turn history into the libraries' wide forecasts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import polars as pl

from forecasting_pipeline.modeling.catalog import (
    FamilySpec,
    NeuralShape,
    build_local_model,
    build_neural_model,
)
from forecasting_pipeline.schemas import DS, INTERVAL_LEVELS, UNIQUE_ID, Y


@dataclass
class NeuralFit:
    forecaster: Any  # the fitted NeuralForecast object, saved as the model's artefact
    train_losses: list[float]
    valid_losses: list[float]


def neural_columns(shape: NeuralShape) -> list[str]:
    return [UNIQUE_ID, DS, Y, *shape.hist_exog, *shape.futr_exog]


def fit_neural_model(
    panel: pd.DataFrame,
    spec: FamilySpec,
    params: Mapping[str, Any],
    shape: NeuralShape,
    freq: str,
    *,
    val_size: int = 0,
) -> NeuralFit:
    """Train one family across every series of `panel`; `val_size` holds out each series' tail."""
    from neuralforecast import NeuralForecast

    forecaster = NeuralForecast(models=[build_neural_model(spec, params, shape)], freq=freq)
    forecaster.fit(df=panel[neural_columns(shape)], val_size=val_size)
    model = forecaster.models[0]
    return NeuralFit(
        forecaster,
        [float(loss) for _, loss in getattr(model, "train_trajectories", [])],
        [float(loss) for _, loss in getattr(model, "valid_trajectories", [])],
    )


def predict_neural(fit: NeuralFit, futr_df: pd.DataFrame | None) -> pd.DataFrame:
    """Forecast each fitted series from its own end (ragged panels forecast from each cutoff)."""
    return fit.forecaster.predict(futr_df=futr_df)


def recent_history(panel: pl.DataFrame, points: int | None) -> pl.DataFrame:
    """Each series' last `points` observations: local families see a bounded, recent history."""
    if points is None:
        return panel
    return panel.sort(UNIQUE_ID, DS).group_by(UNIQUE_ID, maintain_order=True).tail(points)


@dataclass
class LocalFits:
    raw_forecast: pd.DataFrame | None  # wide: unique_id, ds, <family>, <family>-lo-80, …
    fitted: list[str]  # families with forecasts
    failed: dict[str, str] = field(default_factory=dict)  # family -> error


def fit_local_families(
    history: pd.DataFrame,
    families: Sequence[tuple[FamilySpec, Mapping[str, Any]]],
    *,
    freq: str,
    season: int,
    horizon: int,
    n_jobs: int,
) -> LocalFits:
    """Every local family of a group in one StatsForecast call (one pass over the series).

    If that call fails, each family is fitted alone so one failing family (say, an ARIMA that
    does not converge on some series) costs only its own forecasts.
    """
    from statsforecast import StatsForecast

    frame = history[[UNIQUE_ID, DS, Y]]

    def forecast(selected: Sequence[tuple[FamilySpec, Mapping[str, Any]]]) -> pd.DataFrame:
        models = [build_local_model(spec, params, season, horizon) for spec, params in selected]
        return StatsForecast(models=models, freq=freq, n_jobs=n_jobs).forecast(
            df=frame, h=horizon, level=list(INTERVAL_LEVELS)
        )

    if not families:
        return LocalFits(None, [])
    try:
        return LocalFits(forecast(families), [spec.name for spec, _ in families])
    except Exception:  # noqa: S110 - each family is retried alone below, where its error is kept
        pass
    parts: list[pd.DataFrame] = []
    fitted: list[str] = []
    failed: dict[str, str] = {}
    for spec, params in families:
        try:
            part = forecast([(spec, params)])
        except Exception as exc:
            failed[spec.name] = f"{type(exc).__name__}: {exc}"
            continue
        parts.append(part.reset_index() if UNIQUE_ID not in part.columns else part)
        fitted.append(spec.name)
    if not parts:
        return LocalFits(None, [], failed)
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part, on=[UNIQUE_ID, DS], how="outer")
    return LocalFits(merged, fitted, failed)
