"""Training stage: the cross-series panel, global neural models and local statistical models."""

import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    Config,
)
from pydantic import Field

from forecasting_pipeline.assets.conventions import CODE_VERSION, GPU_POOL, note_run, pipeline_asset
from forecasting_pipeline.assets.ingest import observation_history
from forecasting_pipeline.modeling.catalog import (
    GlobalModelParams,
    LocalModelSpec,
    global_model_spec,
    local_model_spec,
)
from forecasting_pipeline.modeling.fitting import fit_global_model, fit_local_model
from forecasting_pipeline.modeling.forecast_frame import catalog_forecast_frame, last_timestamps
from forecasting_pipeline.modeling.frequency import FrequencyError, season_length
from forecasting_pipeline.partitions import (
    SAME_WINDOW,
    date_partitions,
    parse_series_date_key,
    series_date_partitions,
    window_bounds,
)
from forecasting_pipeline.resources.accelerator import AcceleratorResource
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.forecast_policy import ForecastPolicyResource
from forecasting_pipeline.resources.mlflow_tracker import MlflowTrackerResource
from forecasting_pipeline.resources.model_store import ModelStoreResource
from forecasting_pipeline.schemas import UNIQUE_ID, empty_forecast_frame
from forecasting_pipeline.storage.catalog import series_by_partition_key, stored_frequencies
from forecasting_pipeline.storage.lineage import (
    MetricRecord,
    ModelRecord,
    record_metrics,
    register_model,
)
from forecasting_pipeline.storage.observations import read_panel


def _stored_frequency(database: DatabaseResource, series_ids: list[str]) -> str:
    """The one frequency of a panel's series, as inferred at registration (never per window)."""
    with database.transaction() as conn:
        stored = stored_frequencies(conn, series_ids)
    frequencies = dict(zip(stored["unique_id"].to_list(), stored["freq"].to_list(), strict=True))
    distinct = sorted({f for f in frequencies.values() if f})
    if len(distinct) != 1:
        unknown = sorted(s for s, f in frequencies.items() if not f)
        raise FrequencyError(
            f"series in one panel need one stored frequency; found {distinct or 'none'}"
            + (f" (no frequency: {unknown[:5]})" if unknown else "")
        )
    return distinct[0]


def _register_model(
    context: AssetExecutionContext,
    database: DatabaseResource,
    model: ModelRecord,
    metrics: dict[str, float] | None = None,
) -> int:
    """Store a trained model version (and its training metrics) with the run that made it."""
    with database.transaction() as conn:
        note_run(context, conn)
        model_id = register_model(conn, model)
        record_metrics(
            conn,
            [
                MetricRecord(model_id, None, model.window_key, name, value, context.run_id)
                for name, value in (metrics or {}).items()
            ],
        )
    return model_id


def _model_version(window: str, run_id: str) -> str:
    """Unique per training window and run; readable in the UI and in SQL."""
    return f"{window}.{run_id[:8]}"


@pipeline_asset(
    partitions_def=date_partitions,
    deps=[AssetDep(observation_history)],
    group_name="training",
    kinds={"pandas", "postgres"},
)
def training_panel(context: AssetExecutionContext, database: DatabaseResource) -> dict[str, pd.DataFrame]:
    """All series' history up to the window's end, in the long format neuralforecast expects.

    History comes from `forecasting.observations`, the upserted record of every ingested cell;
    the dependency on this window's `observation_history` orders runs and marks the panel stale
    when any cell up to the window changes. Series end where their data ends (ragged panels).
    """
    panels: dict[str, pd.DataFrame] = {}
    with database.transaction() as conn:
        note_run(context, conn)
        for window in context.partition_keys:
            panel = read_panel(conn, until=window_bounds(window).end)
            panels[window] = panel
            context.log.info(
                f"window {window}: {panel[UNIQUE_ID].nunique()} series, {len(panel)} observations"
            )
    return panels


class GlobalModelConfig(Config):
    """Run config of `global_models`; tests and the launchpad shrink or grow the model here."""

    model: str = Field(default="NHITS", description="Name in the global model catalog.")
    input_size: int | None = Field(
        default=None,
        description="Lookback steps; default: the larger of 2 × horizon and 2 seasons.",
    )
    max_steps: int = Field(default=300, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=32, gt=0)
    seed: int = Field(default=1)


@pipeline_asset(
    partitions_def=date_partitions,
    group_name="training",
    pool=GPU_POOL,
    kinds={"pytorch", "neuralforecast"},
)
def global_models(
    context: AssetExecutionContext,
    config: GlobalModelConfig,
    training_panel: dict[str, pd.DataFrame],
    database: DatabaseResource,
    accelerator: AcceleratorResource,
    forecast_policy: ForecastPolicyResource,
    model_store: ModelStoreResource,
    mlflow_tracker: MlflowTrackerResource,
) -> dict[str, pd.DataFrame]:
    """One neural model per training window, fitted across all series; returns its forecasts.

    Runs in the `gpu` pool so concurrent runs never oversubscribe the accelerator; the device
    comes from the accelerator resource (CUDA when present, CPU otherwise). Each model version
    is saved, logged to MLflow (parameters, loss curve, weights) and registered there.
    """
    spec = global_model_spec(config.model)
    trainer_kwargs = accelerator.trainer_kwargs()
    forecasts: dict[str, pd.DataFrame] = {}
    for window, panel in training_panel.items():
        if panel.empty:
            context.log.warning(f"window {window}: no observations yet, nothing to train")
            forecasts[window] = empty_forecast_frame()
            continue
        freq = _stored_frequency(database, sorted(panel[UNIQUE_ID].unique()))
        horizon = forecast_policy.horizon
        params = GlobalModelParams(
            horizon=horizon,
            input_size=config.input_size or max(2 * horizon, 2 * season_length(freq)),
            max_steps=config.max_steps,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            seed=config.seed,
        )
        fit = fit_global_model(panel, spec, params, freq, trainer_kwargs)
        version = _model_version(window, context.run_id)
        artefact = model_store.version_dir(spec.name, version)
        fit.forecaster.save(path=str(artefact), overwrite=True, save_dataset=False)
        final_loss = fit.train_losses[-1] if fit.train_losses else None
        model_params = {**params.__dict__, "freq": freq}
        tracked = mlflow_tracker.log_trained_model(
            registered_name=spec.name,
            run_name=f"{spec.name} {version}",
            params={**model_params, "device": trainer_kwargs["accelerator"]},
            metric_history={"train_loss": fit.train_losses},
            artifact_dir=artefact,
            tags={"window": window, "dagster_run_id": context.run_id, "code_version": CODE_VERSION},
        )
        _register_model(
            context,
            database,
            ModelRecord(
                spec.name,
                version,
                scope="global",
                window_key=window,
                dagster_run_id=context.run_id,
                artifact_uri=artefact.as_uri(),
                device=trainer_kwargs["accelerator"],
                params=model_params,
                mlflow_run_id=tracked.mlflow_run_id,
                registry_version=tracked.registry_version,
            ),
            metrics={"train_loss": final_loss} if final_loss is not None else {},
        )
        forecasts[window] = catalog_forecast_frame(fit.raw_forecast, spec, version, last_timestamps(panel))
        loss_text = f"{final_loss:.4f}" if final_loss is not None else "n/a"
        context.log.info(
            f"window {window}: trained {spec.name} {version} on {panel[UNIQUE_ID].nunique()} series "
            f"({trainer_kwargs['accelerator']}), final train loss {loss_text}; "
            f"MLflow registry {spec.name} v{tracked.registry_version}"
        )
    return forecasts


class LocalModelConfig(Config):
    model: str = Field(default="SeasonalNaive", description="Name in the local model catalog.")


@pipeline_asset(
    partitions_def=series_date_partitions,
    ins={"training_panel": AssetIn(partition_mapping=SAME_WINDOW)},
    group_name="training",
    kinds={"statsforecast"},
)
def local_models(
    context: AssetExecutionContext,
    config: LocalModelConfig,
    training_panel: dict[str, pd.DataFrame],
    database: DatabaseResource,
    forecast_policy: ForecastPolicyResource,
) -> dict[str, pd.DataFrame]:
    """A statistical baseline per series, fitted for all series of a window in one call."""
    spec = local_model_spec(config.model)
    cells = [parse_series_date_key(key) for key in context.partition_keys]
    with database.transaction() as conn:
        ids = series_by_partition_key(conn, sorted({cell.series_key for cell in cells}))
    outputs: dict[str, pd.DataFrame] = {}
    for window, panel in training_panel.items():
        window_cells = [cell for cell in cells if cell.window == window]
        history = panel[panel[UNIQUE_ID].isin({ids[cell.series_key] for cell in window_cells})]
        forecast = _local_forecast(context, database, spec, window, history, forecast_policy.horizon)
        by_series = dict(iter(forecast.groupby(UNIQUE_ID, sort=False)))
        empty = forecast.iloc[0:0]
        for cell in window_cells:
            outputs[str(cell.key)] = by_series.get(ids[cell.series_key], empty).reset_index(drop=True)
        context.log.info(
            f"window {window}: {spec.name} forecasts for {forecast[UNIQUE_ID].nunique()} "
            f"of {len(window_cells)} series"
        )
    return outputs


def _local_forecast(
    context: AssetExecutionContext,
    database: DatabaseResource,
    spec: LocalModelSpec,
    window: str,
    history: pd.DataFrame,
    horizon: int,
) -> pd.DataFrame:
    """Fit the local model on one window's history and register the version it produced."""
    if history.empty:
        return empty_forecast_frame()
    freq = _stored_frequency(database, sorted(history[UNIQUE_ID].unique()))
    fit = fit_local_model(history, spec, freq, horizon)
    if fit.too_short:
        context.log.warning(f"window {window}: {fit.too_short} have under one season of data")
    if fit.raw_forecast is None:
        return empty_forecast_frame()
    version = _model_version(window, context.run_id)
    params = {"season_length": fit.season, "freq": freq}
    model = ModelRecord(spec.name, version, "local", window, context.run_id, params=params)
    _register_model(context, database, model)
    return catalog_forecast_frame(fit.raw_forecast, spec, version, last_timestamps(fit.fitted))
