"""Objectives of the hyper-parameter studies: what "better" means for each kind of family.

Neural families are scored by their validation loss on the held-out last horizon of every
series (the loss they train on), reported to Optuna as training goes so poor trials are pruned.
Local families are scored by a one-fold backtest over the same horizon, as a relative MAE so
series of different scales weigh alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecasting_pipeline.modeling.catalog import FamilySpec, NeuralShape, build_local_model, suggest_params
from forecasting_pipeline.modeling.fitting import fit_neural_model
from forecasting_pipeline.schemas import DS, UNIQUE_ID, Y

if TYPE_CHECKING:
    import optuna

# Lightning logs the validation loss under this name (neuralforecast's BaseModel).
VALIDATION_METRIC = "ptl/val_loss"
VALIDATION_CHECKS = 4  # validation passes per trial: the points at which a trial can be pruned

Objective = Callable[["optuna.Trial"], float]


def neural_objective(panel: pd.DataFrame, spec: FamilySpec, shape: NeuralShape, freq: str) -> Objective:
    """Train on all but each series' last horizon; the best validation loss is the score."""
    from forecasting_pipeline.modeling.search import pruning_callback

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, spec)
        callbacks = [*shape.trainer_kwargs.get("callbacks", []), pruning_callback(trial, VALIDATION_METRIC)]
        trial_shape = replace(
            shape,
            trainer_kwargs={**shape.trainer_kwargs, "callbacks": callbacks},
            val_check_steps=max(1, shape.max_steps // VALIDATION_CHECKS),
        )
        fit = fit_neural_model(panel, spec, params, trial_shape, freq, val_size=shape.horizon)
        finite = [loss for loss in fit.valid_losses if np.isfinite(loss)]
        return min(finite) if finite else float("inf")

    return objective


def neural_pruner(max_steps: int) -> optuna.pruners.BasePruner:
    """Stop a trial whose validation loss is worse than the median of earlier trials at the same
    step, from its second validation pass on (the first is too early to judge)."""
    import optuna

    return optuna.pruners.MedianPruner(
        n_startup_trials=2, n_warmup_steps=max(1, max_steps // VALIDATION_CHECKS)
    )


def relative_mae(actual: pd.Series, forecast: pd.Series, series: pd.Series) -> float:
    """Mean over series of MAE / mean |y|: scale-free, defined for series that cross zero."""
    frame = pd.DataFrame({"id": series.to_numpy(), "err": (actual - forecast).abs(), "y": actual.abs()})
    per_series = frame.groupby("id", sort=False).agg(err=("err", "mean"), y=("y", "mean"))
    scale = per_series["y"].where(per_series["y"] > 0, 1.0)
    return float((per_series["err"] / scale).mean())


def local_objective(
    history: pd.DataFrame, spec: FamilySpec, *, freq: str, season: int, horizon: int, n_jobs: int
) -> Objective:
    """One rolling-origin fold over the last horizon of every series, all series in one call."""
    from statsforecast import StatsForecast

    frame = history[[UNIQUE_ID, DS, Y]]

    def objective(trial: optuna.Trial) -> float:
        params: dict[str, Any] = suggest_params(trial, spec)
        model = build_local_model(spec, params, season, horizon)
        folds = StatsForecast(models=[model], freq=freq, n_jobs=n_jobs).cross_validation(
            df=frame, h=horizon, n_windows=1, step_size=horizon
        )
        folds = folds.reset_index() if UNIQUE_ID not in folds.columns else folds
        return relative_mae(folds[Y], folds[spec.name], folds[UNIQUE_ID])

    return objective
