"""Training stage: frequency-grouped panels, global neural families and local statistical families.

Every (family, frequency group, window) is its own model version with its own forecasts; one
family failing never removes or blocks another's, and local families do not wait for neural
training.
"""

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import polars as pl
from dagster import AssetDep, AssetExecutionContext, Config, MaterializeResult, MetadataValue
from pydantic import Field
from sqlalchemy import Connection

from forecasting_pipeline.assets.conventions import (
    GPU_OP_TAGS,
    GPU_POOL,
    code_version,
    markdown_table,
    note_run,
    pipeline_asset,
)
from forecasting_pipeline.assets.ingest import observation_history
from forecasting_pipeline.assets.model_inputs import (
    local_history,
    neural_recipe,
    resource_stat,
)
from forecasting_pipeline.assets.run_defaults import preset_default
from forecasting_pipeline.modeling.catalog import FamilySpec
from forecasting_pipeline.modeling.drivers import (
    DriverRule,
    available_drivers,
    decide_drivers,
    keep_selected_drivers,
    selected_by_group,
)
from forecasting_pipeline.modeling.fitting import (
    fit_local_families,
    fit_neural_model,
    predict_neural,
)
from forecasting_pipeline.modeling.forecast_frame import (
    catalog_forecast_frame,
    last_timestamps,
    restamp,
)
from forecasting_pipeline.modeling.frequency_groups import GroupTask, group_panel, group_tasks
from forecasting_pipeline.modeling.usage import measure
from forecasting_pipeline.partitions import (
    SAME_WINDOW,
    date_partitions,
    window_bounds,
)
from forecasting_pipeline.resources.accelerator import AcceleratorResource
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.mlflow_tracker import DAGSTER_RUN_TAG, MlflowTrackerResource
from forecasting_pipeline.resources.model_catalog import ModelCatalogResource
from forecasting_pipeline.schemas import UNIQUE_ID
from forecasting_pipeline.series_keys import partition_keys
from forecasting_pipeline.storage.catalog import stored_frequencies
from forecasting_pipeline.storage.experiments import (
    record_exclusions,
    record_resource_stats,
    tuned_params,
)
from forecasting_pipeline.storage.lineage import MetricRecord, ModelRecord, record_metrics, register_model
from forecasting_pipeline.storage.observations import history_versions, read_panel
from forecasting_pipeline.storage.predictions import store_predictions
from forecasting_pipeline.storage.studies import (
    driver_evidence,
    replace_driver_selection,
)


def lineage_tags(context: AssetExecutionContext, task: GroupTask, data_version: str | None) -> dict[str, str]:
    """What an MLflow run and registry version carry to trace them to the window, data and code."""
    tags = {
        "window": task.window,
        "partition_key": task.window,
        "freq_group": task.group,
        DAGSTER_RUN_TAG: context.run_id,
        "code_version": code_version(context),
    }
    return {**tags, "data_version": data_version} if data_version else tags


def model_version(group: str, window: str, run_id: str) -> str:
    """Unique per (family, group, window, run) together with the family name; readable in SQL."""
    return f"{group}.{window}.{run_id[:8]}"


def registered_name(family: str, group: str) -> str:
    """One MLflow registered model per family and frequency group; its versions are the windows."""
    return f"{family}-{group}"


class DriverSelectionConfig(Config):
    """Which drivers the window's models take (see `modeling/drivers.py`)."""

    rule: str = Field(
        default="screened",
        description="screened: drivers passing the Granger/FDR screen; all; none; listed: `drivers`.",
    )
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Adjusted p-value a Granger test must beat.")
    min_share: float = Field(
        default=0.5, gt=0, le=1, description="Share of a group's testable series in which a driver must pass."
    )
    drivers: list[str] = Field(default=[], description="The drivers of rule 'listed'.")

    def driver_rule(self) -> DriverRule:
        return DriverRule(
            rule=self.rule, alpha=self.alpha, min_share=self.min_share, listed=tuple(self.drivers)
        )


@pipeline_asset(
    partitions_def=date_partitions,
    deps=[AssetDep(observation_history), AssetDep("granger_study", partition_mapping=SAME_WINDOW)],
    group_name="training",
    kinds={"polars", "postgres"},
)
def training_panel(
    context: AssetExecutionContext,
    config: DriverSelectionConfig,
    database: DatabaseResource,
    model_catalog: ModelCatalogResource,
) -> dict[str, pd.DataFrame]:
    """All forecastable series' history up to the window's end, tagged with its frequency group,
    with the drivers the studies chose for each group.

    History comes from `forecasting.observations`, the upserted record of every ingested cell;
    the dependency on this window's `observation_history` marks the panel stale when any cell
    up to the window changes. A series too short, constant or irregular is set aside in
    `forecasting.forecast_exclusions` with its reason instead of failing the others. The driver
    decisions (and their evidence) go to `forecasting.driver_selection`, which backtests read so
    they score the same inputs.
    """
    rule = config.driver_rule()
    decisions: list[pl.DataFrame] = []
    catalog = model_catalog.catalog()
    panels: dict[str, pd.DataFrame] = {}
    summary: list[dict[str, Any]] = []
    with database.transaction() as conn:
        note_run(context, conn)
        for window in context.partition_keys:
            observed = read_panel(conn, until=window_bounds(window).end)
            if observed.height == 0:
                panels[window] = observed.to_pandas()
                continue
            frequencies = stored_frequencies(conn, observed[UNIQUE_ID].unique().to_list())
            grouped = group_panel(observed, frequencies, catalog)
            record_exclusions(conn, window, grouped.excluded, context.run_id)
            chosen = decide_drivers(
                available_drivers(grouped.panel), driver_evidence(conn, window, rule.alpha), rule
            )
            replace_driver_selection(conn, window, chosen, context.run_id)
            decisions.append(chosen.with_columns(pl.lit(window).alias("window")))
            panels[window] = keep_selected_drivers(grouped.panel, selected_by_group(chosen)).to_pandas()
            by_group = grouped.panel.group_by("freq_group").agg(pl.col(UNIQUE_ID).n_unique().alias("series"))
            summary.append(
                {
                    "window": window,
                    **dict(zip(by_group["freq_group"], by_group["series"], strict=True)),
                    "set_aside": grouped.excluded.height,
                }
            )
            if grouped.excluded.height:
                context.log.warning(f"window {window}: set aside {_examples_by_reason(grouped.excluded)}")
    drivers = pl.concat(decisions) if decisions else pl.DataFrame()
    context.add_output_metadata(
        {
            "groups": MetadataValue.json(summary),
            "drivers": MetadataValue.md(markdown_table(drivers.drop("rule")))
            if drivers.height
            else "no drivers",
        }
    )
    return panels


def _examples_by_reason(excluded: pl.DataFrame) -> str:
    """'too_short: 12 series (a: 2 observations; …)' per reason, a few examples each."""
    by_reason = (
        excluded.group_by("reason", maintain_order=True)
        .agg(pl.len().alias("series"), pl.format("{}: {}", UNIQUE_ID, "detail").head(3).alias("examples"))
        .select(
            pl.format("{}: {} series ({})", "reason", "series", pl.col("examples").list.join("; ")).alias(
                "text"
            )
        )
    )
    return "; ".join(by_reason["text"].to_list())


class GlobalModelConfig(Config):
    """Run config of `global_models`; tests and the launchpad shrink or grow training here."""

    families: list[str] | None = Field(
        default=None, description="Neural families of the catalog to train; default: the enabled ones."
    )
    max_steps: int = Field(default=preset_default("max_steps", 300), gt=0)
    input_size: int | None = Field(
        default=None, description="Lookback steps for every group; default: tuned, else the group's."
    )
    batch_size: int | None = Field(default=None, gt=0, description="Overrides the catalog and tuning.")
    seed: int = Field(default=1)
    deadline: float | None = Field(
        default=None, description="Unix time after which no further neural family starts (a preset's budget)."
    )


class WindowGroup(Protocol):
    """A frequency group of a window: a group task, or the history slice a study reads."""

    @property
    def window(self) -> str: ...

    @property
    def group(self) -> str: ...


def cell_columns(frame: pl.DataFrame, task: WindowGroup) -> list[pl.Expr]:
    """window_key, partition_key and freq_group of rows keyed by series: what joins a row to its
    series × window partition and frequency group."""
    return [
        pl.lit(task.window).alias("window_key"),
        (pl.lit(task.window + "|") + partition_keys(frame[UNIQUE_ID])).alias("partition_key"),
        pl.lit(task.group).alias("freq_group"),
    ]


def _lineage_columns(forecast: pd.DataFrame, task: GroupTask, model_ids: dict[str, int]) -> pl.DataFrame:
    """Forecast rows with what joins them to their window, partition and model row."""
    frame = pl.from_pandas(restamp(forecast, task.series_freq, task.freq))
    return frame.with_columns(
        *cell_columns(frame, task),
        pl.col("model_name").replace_strict(model_ids, return_dtype=pl.Int64).alias("model_id"),
    )


def _data_version(conn: Connection, window: str) -> str:
    (version,) = history_versions(conn, [window])
    return version.version


@pipeline_asset(
    partitions_def=date_partitions,
    deps=[AssetDep("hyperparameter_search")],
    group_name="training",
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"pytorch", "neuralforecast", "mlflow"},
)
def global_models(
    context: AssetExecutionContext,
    config: GlobalModelConfig,
    training_panel: dict[str, pd.DataFrame],
    database: DatabaseResource,
    accelerator: AcceleratorResource,
    model_catalog: ModelCatalogResource,
    mlflow_tracker: MlflowTrackerResource,
) -> MaterializeResult:
    """Each neural family trained across each frequency group's series, per window.

    Parameters are the catalog's defaults overlaid by the window's tuned best. Each version is
    logged to MLflow (parameters, loss curves, weights: the only copy), registered there with
    its lineage, and recorded with its forecasts in one transaction; if that write fails the
    registry version is removed again. A failing family is reported and the others go on.
    """
    families = model_catalog.catalog().neural(config.families)
    device = accelerator.resolve_device()
    step = _NeuralStep(
        context,
        config,
        database,
        model_catalog,
        mlflow_tracker,
        accelerator.trainer_kwargs(distributed=True),  # one long fit per family: worth every GPU
        device,
    )
    trained: list[dict[str, Any]] = []
    failures: list[str] = []
    skipped: list[str] = []
    for window, panel in training_panel.items():
        for task in group_tasks(window, panel, model_catalog.horizon):
            with database.transaction() as conn:
                tuned = tuned_params(conn, window, task.group, [f.name for f in families])
            for spec in families:
                if config.deadline is not None and time.time() > config.deadline:
                    skipped.append(f"{spec.name}/{task.group}/{window}")
                    continue
                try:
                    trained.append(_train_neural(step, task, spec, tuned.get(spec.name)))
                except Exception as exc:
                    failures.append(f"{spec.name}/{task.group}/{window}: {type(exc).__name__}: {exc}")
                    context.log.error(f"window {window}: {spec.name} on {task.group} failed: {exc}")
    if skipped:
        context.log.warning(f"time budget spent: not trained {', '.join(skipped)}")
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(failures) + len(trained)} trainings failed: " + "; ".join(failures)
        )
    return MaterializeResult(
        metadata={
            "models": MetadataValue.md(markdown_table(pl.DataFrame(trained))) if trained else "none",
            "device": device,
            "forecast_rows": sum(t["forecast rows"] for t in trained),
            "skipped_for_time_budget": MetadataValue.json(skipped),
        }
    )


@dataclass(frozen=True)
class _NeuralStep:
    """What the trainings of one `global_models` step share: run, config, resources, device."""

    context: AssetExecutionContext
    config: GlobalModelConfig
    database: DatabaseResource
    model_catalog: ModelCatalogResource
    mlflow_tracker: MlflowTrackerResource
    trainer_kwargs: dict[str, Any]
    device: str


def _train_neural(
    step: _NeuralStep, task: GroupTask, spec: FamilySpec, tuned: dict[str, Any] | None
) -> dict[str, Any]:
    """Train, track, register and store one (family, group, window) version."""
    context, config, database, device = step.context, step.config, step.database, step.device
    model_catalog, mlflow_tracker, trainer_kwargs = (
        step.model_catalog,
        step.mlflow_tracker,
        step.trainer_kwargs,
    )
    with database.transaction() as conn:
        recipe = neural_recipe(
            conn,
            task,
            spec,
            tuned,
            model_catalog,
            max_steps=config.max_steps,
            seed=config.seed,
            trainer_kwargs=trainer_kwargs,
            input_size=config.input_size,
            batch_size=config.batch_size,
        )
        data_version = _data_version(conn, task.window)
    params, shape = recipe.params, recipe.shape
    version = model_version(task.group, task.window, context.run_id)
    recorded_params = {
        **params,
        "horizon": task.horizon,
        "input_size": int(params.get("input_size_multiplier", 0)) * task.horizon or shape.input_size,
        "max_steps": shape.max_steps,
        "freq": task.freq,
        "hist_exog": list(shape.hist_exog),
        "futr_exog": list(shape.futr_exog),
        "seed": shape.seed,
    }
    lineage = lineage_tags(context, task, data_version)
    # The MLflow run is open while the model trains: a killed training leaves it RUNNING under
    # this Dagster run's id, for recovery to mark FAILED.
    with mlflow_tracker.training_run(
        run_name=f"{spec.name} {version}", params={**recorded_params, "device": device}, tags=lineage
    ) as opened:
        with measure(device) as usage:
            fit = fit_neural_model(task.panel, spec, params, shape, task.freq)
            raw = predict_neural(fit, recipe.futr_df)
        with tempfile.TemporaryDirectory() as folder:
            fit.forecaster.save(path=folder, overwrite=True, save_dataset=False)
            tracked = mlflow_tracker.finish_run(
                opened,
                registered_name=registered_name(spec.name, task.group),
                metric_history={"train_loss": fit.train_losses},
                artifact_dir=Path(folder),
                tags=lineage,
            )
    forecast = catalog_forecast_frame(raw, spec, version, last_timestamps(task.panel))
    try:
        with database.transaction() as conn:
            note_run(context, conn)
            model_id = register_model(
                conn,
                ModelRecord(
                    spec.name,
                    version,
                    "global",
                    task.window,
                    context.run_id,
                    artifact_uri=tracked.artifact_uri,
                    device=device,
                    params=recorded_params,
                    mlflow_run_id=tracked.mlflow_run_id,
                    registry_version=tracked.registry_version,
                    freq_group=task.group,
                    data_version=data_version,
                    code_version=lineage["code_version"],
                    series_count=task.series_count,
                ),
            )
            if fit.train_losses:
                record_metrics(
                    conn,
                    [
                        MetricRecord(
                            model_id, None, task.window, "train_loss", fit.train_losses[-1], context.run_id
                        )
                    ],
                )
            rows = store_predictions(
                conn, _lineage_columns(forecast, task, {spec.name: model_id}), context.run_id
            )
            record_resource_stats(
                conn,
                [
                    resource_stat(context.run_id, "training", spec.name, task, usage, model_id),
                ],
            )
    except BaseException as exc:
        _forget(context, mlflow_tracker, tracked, exc)
        raise
    context.log.info(
        f"window {task.window}: {spec.name} {version} on {task.series_count} {task.group} series "
        f"({device}, {usage.wall_seconds:.1f}s); MLflow {tracked.registered_name} v{tracked.registry_version}"
    )
    return {
        "family": spec.name,
        "group": task.group,
        "window": task.window,
        "version": version,
        "series": task.series_count,
        "seconds": round(usage.wall_seconds, 1),
        "registry": f"{tracked.registered_name} v{tracked.registry_version}",
        "forecast rows": rows,
    }


def _forget(
    context: AssetExecutionContext, mlflow_tracker: MlflowTrackerResource, tracked: Any, error: BaseException
) -> None:
    """Remove a registry version whose database record failed, so MLflow never holds an orphan."""
    try:
        mlflow_tracker.forget(tracked, f"database write failed: {error}")
    except Exception as cleanup:  # the database error is the one to report
        context.log.error(f"could not remove registry version {tracked.registry_version}: {cleanup}")


class LocalModelConfig(Config):
    families: list[str] | None = Field(
        default=None, description="Local families of the catalog to fit; default: the enabled ones."
    )


@pipeline_asset(
    partitions_def=date_partitions,
    deps=[AssetDep("hyperparameter_search")],
    group_name="training",
    kinds={"statsforecast", "postgres"},
)
def local_models(
    context: AssetExecutionContext,
    config: LocalModelConfig,
    training_panel: dict[str, pd.DataFrame],
    database: DatabaseResource,
    model_catalog: ModelCatalogResource,
    mlflow_tracker: MlflowTrackerResource,
) -> MaterializeResult:
    """Statistical families for every series of the window, all fitted in one StatsForecast call
    per frequency group.

    Partitioned by window, not series × window: one fit covers every series, its per-series
    detail is rows (models, forecasts), and nobody materializes one series' baseline alone, so
    a key per series would only add Dagster bookkeeping (about 11 ms each). Each series sees its
    recent history (the group's `local_history_seasons`); tuned parameters come from the
    window's studies when there are any. It does not depend on the neural families.
    """
    families = model_catalog.catalog().local(config.families)
    with database.transaction() as conn:
        note_run(context, conn)
    summary = [
        _fit_local_group(context, task, families, database, model_catalog, mlflow_tracker)
        for window, panel in training_panel.items()
        for task in group_tasks(window, panel, model_catalog.horizon)
    ]
    return MaterializeResult(metadata={"groups": MetadataValue.json(summary)})


def _fit_local_group(
    context: AssetExecutionContext,
    task: GroupTask,
    families: list[FamilySpec],
    database: DatabaseResource,
    model_catalog: ModelCatalogResource,
    mlflow_tracker: MlflowTrackerResource,
) -> dict[str, Any]:
    history = local_history(task, model_catalog)
    with database.transaction() as conn:
        tuned = tuned_params(conn, task.window, task.group, [f.name for f in families])
        data_version = _data_version(conn, task.window)
    chosen = [(spec, {**spec.defaults, **tuned.get(spec.name, {})}) for spec in families]
    with measure("cpu") as usage:
        fits = fit_local_families(
            history,
            chosen,
            freq=task.freq,
            season=task.season,
            horizon=task.horizon,
            n_jobs=model_catalog.statsforecast_n_jobs,
        )
    for family, error in fits.failed.items():
        context.log.error(f"window {task.window}: {family} on {task.group} failed: {error}")
    version = model_version(task.group, task.window, context.run_id)
    cutoffs = last_timestamps(history)
    params_of = {spec.name: params for spec, params in chosen}
    fitted = [spec for spec in families if spec.name in fits.fitted]
    params_of = {
        spec.name: {
            **params_of[spec.name],
            "season_length": task.season,
            "freq": task.freq,
            "horizon": task.horizon,
            # Local families take no drivers; recorded so every model version says what it used.
            "hist_exog": [],
            "futr_exog": [],
        }
        for spec in fitted
    }
    lineage = lineage_tags(context, task, data_version)
    # A local family's "model" is its specification: it is refitted on each series' recent
    # history whenever it forecasts. Registering it gives champions an MLflow alias like neural ones.
    tracked = {
        spec.name: mlflow_tracker.log_model_spec(
            registered_name=registered_name(spec.name, task.group),
            run_name=f"{spec.name} {version}",
            spec={"family": spec.name, "model_class": spec.model_class, "params": params_of[spec.name]},
            tags=lineage,
        )
        for spec in fitted
    }
    try:
        with database.transaction() as conn:
            model_ids = {
                spec.name: register_model(
                    conn,
                    ModelRecord(
                        spec.name,
                        version,
                        "local",
                        task.window,
                        context.run_id,
                        artifact_uri=tracked[spec.name].artifact_uri,
                        device="cpu",
                        params=params_of[spec.name],
                        mlflow_run_id=tracked[spec.name].mlflow_run_id,
                        registry_version=tracked[spec.name].registry_version,
                        freq_group=task.group,
                        data_version=data_version,
                        code_version=lineage["code_version"],
                        series_count=task.series_count,
                    ),
                )
                for spec in fitted
            }
            forecasts = [catalog_forecast_frame(fits.raw_forecast, spec, version, cutoffs) for spec in fitted]
            rows = (
                store_predictions(
                    conn,
                    _lineage_columns(pd.concat(forecasts, ignore_index=True), task, model_ids),
                    context.run_id,
                )
                if forecasts
                else 0
            )
            record_resource_stats(
                conn,
                [
                    # One StatsForecast call fits every family: its cost is recorded once, under all names.
                    resource_stat(context.run_id, "training", "+".join(fits.fitted) or "none", task, usage),
                ],
            )
    except BaseException as exc:
        for model in tracked.values():
            _forget(context, mlflow_tracker, model, exc)
        raise
    context.log.info(
        f"window {task.window}: {', '.join(fits.fitted) or 'no family'} on {task.series_count} "
        f"{task.group} series in {usage.wall_seconds:.1f}s; {rows} forecast rows"
    )
    return {
        "window": task.window,
        "group": task.group,
        "series": task.series_count,
        "families": fits.fitted,
        "failed": fits.failed,
        "forecast_rows": rows,
        "seconds": round(usage.wall_seconds, 2),
    }
