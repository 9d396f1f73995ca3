"""What a model family is given for a frequency group (its shape and exogenous inputs), and
what its tuning or training cost.

Shared by tuning and training, so a tuned configuration is trained on exactly the inputs it
was tuned on.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import polars as pl
from sqlalchemy import Connection

from forecasting_pipeline.modeling.catalog import FamilySpec, NeuralShape, neural_params
from forecasting_pipeline.modeling.fitting import recent_history
from forecasting_pipeline.modeling.forecast_frame import future_grid, last_timestamps
from forecasting_pipeline.modeling.frequency_groups import GroupTask
from forecasting_pipeline.modeling.usage import Usage
from forecasting_pipeline.resources.model_catalog import ModelCatalogResource
from forecasting_pipeline.schemas import DS, UNIQUE_ID
from forecasting_pipeline.storage.experiments import ResourceStat, future_drivers
from forecasting_pipeline.storage.observations import read_future_drivers


def neural_shape(
    task: GroupTask,
    model_catalog: ModelCatalogResource,
    *,
    max_steps: int,
    seed: int,
    trainer_kwargs: dict[str, Any],
    input_size: int | None = None,
    hist_exog: Sequence[str] = (),
    futr_exog: Sequence[str] = (),
) -> NeuralShape:
    group = model_catalog.group(task.group)
    return NeuralShape(
        horizon=task.horizon,
        input_size=input_size or group.input_size_multiplier * task.horizon,
        max_steps=max_steps,
        seed=seed,
        trainer_kwargs=trainer_kwargs,
        hist_exog=tuple(hist_exog),
        futr_exog=tuple(futr_exog),
    )


def local_history(task: GroupTask, model_catalog: ModelCatalogResource) -> pd.DataFrame:
    """The recent history local families see: the group's `local_history_seasons` per series."""
    seasons = model_catalog.group(task.group).local_history_seasons
    points = seasons * task.season if seasons else None
    return recent_history(pl.from_pandas(task.panel), points).to_pandas()


def _future_frame(conn: Connection, task: GroupTask, names: list[str]) -> pd.DataFrame | None:
    """Future-known drivers over every series' horizon, or None where any value is missing."""
    cutoffs = last_timestamps(task.panel)
    grid = future_grid(cutoffs, task.freq, task.horizon).drop(columns="step")
    ahead = read_future_drivers(conn, cutoffs, task.horizon)
    if not set(names) <= set(ahead.columns):
        return None
    frame = grid.merge(ahead[[UNIQUE_ID, DS, *names]], on=[UNIQUE_ID, DS], how="left")
    return None if frame[names].isna().to_numpy().any() else frame.reset_index(drop=True)


def exogenous_inputs(
    conn: Connection, task: GroupTask, spec: FamilySpec
) -> tuple[list[str], list[str], pd.DataFrame | None]:
    """(historical, future, future frame) drivers for a family, as the dataset declared them.

    Future-known drivers go in as future inputs when their values cover every series' horizon
    (a past window, whose next days are stored); otherwise, and for families without future
    inputs, they are used as historical inputs, which needs no values ahead.
    """
    drivers = task.drivers
    if not drivers:
        return [], [], None
    known_ahead = sorted(set(drivers) & future_drivers(conn, task.series_freq[UNIQUE_ID].to_list()))
    futr: list[str] = []
    futr_df = None
    if spec.accepts.future_exogenous and known_ahead:
        futr_df = _future_frame(conn, task, known_ahead)
        futr = known_ahead if futr_df is not None else []
    hist = [d for d in drivers if d not in futr] if spec.accepts.historical_exogenous else []
    return hist, futr, futr_df


@dataclass(frozen=True)
class NeuralRecipe:
    """Everything a neural family is built and fed with for one group: training and backtests
    use the same recipe, so a backtest scores the configuration that forecasts."""

    params: dict[str, Any]
    shape: NeuralShape
    futr_df: pd.DataFrame | None  # future-known drivers over the horizon, when used


def neural_recipe(
    conn: Connection,
    task: GroupTask,
    spec: FamilySpec,
    tuned: Mapping[str, Any] | None,
    model_catalog: ModelCatalogResource,
    *,
    max_steps: int,
    seed: int,
    trainer_kwargs: dict[str, Any],
    input_size: int | None = None,
    batch_size: int | None = None,
) -> NeuralRecipe:
    """The catalog's defaults overlaid by tuned values and run overrides, with the drivers."""
    params = neural_params(spec, tuned)
    if batch_size:
        params["batch_size"] = batch_size
    if input_size:
        params.pop("input_size_multiplier", None)
    hist, futr, futr_df = exogenous_inputs(conn, task, spec)
    shape = neural_shape(
        task,
        model_catalog,
        max_steps=max_steps,
        seed=seed,
        trainer_kwargs=trainer_kwargs,
        input_size=input_size,
        hist_exog=hist,
        futr_exog=futr,
    )
    return NeuralRecipe(params, shape, futr_df)


def resource_stat(
    run_id: str, stage: str, model_name: str, task: GroupTask, usage: Usage, model_id: int | None = None
) -> ResourceStat:
    """The `resource_stats` row of one tuning or training step on a group's series."""
    return ResourceStat(
        run_id,
        stage,
        model_name,
        task.group,
        task.window,
        task.series_count,
        usage.wall_seconds,
        usage.peak_rss_mb,
        usage.device,
        usage.gpu_peak_mb,
        model_id,
    )
