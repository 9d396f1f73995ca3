"""`backtest_folds`: rolling-origin backtests of every candidate, per series × window.

Candidates are the catalog's families (configured exactly as the window's trained versions:
same tuned parameters, drivers and horizon) and ensembles of them. Everything downstream
(leaderboard, champions, calibrated intervals) is scored on these same folds.
"""

import time
from dataclasses import dataclass
from typing import Any

import polars as pl
from dagster import AssetDep, AssetExecutionContext, MaterializeResult, MetadataValue
from pydantic import Field
from sqlalchemy import Connection

from forecasting_pipeline.assets.cell_metadata import add_cell_rows
from forecasting_pipeline.assets.conventions import (
    GPU_OP_TAGS,
    GPU_POOL,
    code_version,
    markdown_table,
    note_run,
    pipeline_asset,
)
from forecasting_pipeline.assets.model_inputs import local_history, neural_recipe, resource_stat
from forecasting_pipeline.assets.run_defaults import preset_default
from forecasting_pipeline.assets.training import (
    GlobalModelConfig,
    cell_columns,
    lineage_tags,
    model_version,
    registered_name,
)
from forecasting_pipeline.modeling.backtest import (
    FoldPlan,
    affordable_folds,
    cross_validate_local,
    cross_validate_neural,
    empty_folds,
)
from forecasting_pipeline.modeling.calibration import (
    choose_interval_method,
    conformal_quantiles,
    heldout_coverage,
)
from forecasting_pipeline.modeling.drivers import keep_selected_drivers
from forecasting_pipeline.modeling.ensembles import combine_forecasts, ensemble_folds, ensemble_members
from forecasting_pipeline.modeling.evaluation import evaluate_backtest, fold_scores, series_scales
from forecasting_pipeline.modeling.frequency_groups import GroupTask, group_panel, group_tasks
from forecasting_pipeline.modeling.usage import measure
from forecasting_pipeline.partitions import SAME_WINDOW, series_date_partitions, window_bounds
from forecasting_pipeline.reporting.plots import error_by_horizon, markdown_image
from forecasting_pipeline.resources.accelerator import AcceleratorResource
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.mlflow_tracker import MlflowTrackerResource
from forecasting_pipeline.resources.model_catalog import ModelCatalogResource
from forecasting_pipeline.schemas import DS, UNIQUE_ID
from forecasting_pipeline.storage.backtests import (
    replace_backtest,
    replace_ensemble_members,
    replace_series_scales,
    series_metrics,
)
from forecasting_pipeline.storage.catalog import series_by_window, stored_frequencies
from forecasting_pipeline.storage.experiments import record_resource_stats, tuned_params
from forecasting_pipeline.storage.lineage import ModelRecord, register_model, window_models
from forecasting_pipeline.storage.observations import read_panel
from forecasting_pipeline.storage.predictions import store_predictions, window_forecasts
from forecasting_pipeline.storage.reports import step_errors
from forecasting_pipeline.storage.studies import selected_drivers
from forecasting_pipeline.storage.tables import BACKTEST_FOLDS


class BacktestConfig(GlobalModelConfig):
    """Fold plan and candidates of `backtest_folds`; neural fields as in `GlobalModelConfig`."""

    n_windows: int = Field(
        default=preset_default("n_windows", 3), ge=1, description="Forecast origins per series."
    )
    step_size: int | None = Field(default=None, gt=0, description="Steps between origins; default: horizon.")
    refit_local: int = Field(
        default=1, ge=0, description="Statistical families: refit every n folds (1: every fold; 0: never)."
    )
    refit_neural: int = Field(
        default=0,
        ge=0,
        description="Neural families: 0 trains once before the first origin; n refits every n.",
    )
    top_k: int = Field(default=3, ge=2, description="Members of the mean/median ensembles.")
    ensembles: bool = Field(
        default=preset_default("ensembles", True), description="Score ensembles and per-series selection."
    )


@pipeline_asset(
    lazy_modules=(
        "forecasting_pipeline.modeling.backtest",
        "forecasting_pipeline.modeling.evaluation",
        "forecasting_pipeline.modeling.ensembles",
        "forecasting_pipeline.modeling.calibration",
    ),
    partitions_def=series_date_partitions,
    deps=[
        AssetDep("global_models", partition_mapping=SAME_WINDOW),
        AssetDep("local_models", partition_mapping=SAME_WINDOW),
    ],
    group_name="evaluation",
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"statsforecast", "neuralforecast", "postgres"},
)
def backtest_folds(
    context: AssetExecutionContext,
    config: BacktestConfig,
    database: DatabaseResource,
    accelerator: AcceleratorResource,
    model_catalog: ModelCatalogResource,
    mlflow_tracker: MlflowTrackerResource,
) -> MaterializeResult:
    """Fold forecasts and actuals of every candidate, with metrics and interval calibration.

    Each fold trains only on data up to its cutoff. Series too short for the fold plan get no
    folds (model selection gives them their group's best). Metrics are per series, per horizon
    step and per frequency group; conformal quantiles of scaled residuals calibrate the
    published intervals.
    """
    with database.transaction() as conn:
        note_run(context, conn)
        by_window = series_by_window(conn, context.partition_keys)
    step = _BacktestStep(
        context, config, database, model_catalog, mlflow_tracker, accelerator.trainer_kwargs()
    )
    summary: list[dict[str, Any]] = []
    for window, series_ids in by_window.items():
        with database.transaction() as conn:
            panel = read_panel(conn, window_bounds(window).end, series_ids)
            frequencies = stored_frequencies(conn, series_ids)
            chosen = selected_drivers(conn, window)
        if panel.height == 0:
            continue
        grouped = group_panel(panel, frequencies, model_catalog.catalog())
        # The drivers the window's models were trained with (training_panel's decision).
        inputs = keep_selected_drivers(grouped.panel, chosen)
        for task in group_tasks(window, inputs.to_pandas(), model_catalog.horizon):
            summary.append(_backtest_group(step, task))
    with database.transaction() as conn:
        add_cell_rows(
            context, conn, BACKTEST_FOLDS, by_window, "fold_rows", _best_candidates(conn, by_window)
        )
        horizon_plot = _error_by_horizon(conn, max(by_window)) if by_window else None
    return MaterializeResult(
        metadata={
            "groups": MetadataValue.md(markdown_table(pl.DataFrame(summary)))
            if summary
            else "no forecastable series",
            "fold_rows": sum(s["fold rows"] for s in summary),
            **({"error_by_horizon_step": horizon_plot} if horizon_plot is not None else {}),
        }
    )


def _best_candidates(conn: Connection, by_window: dict[str, list[str]]) -> pl.DataFrame:
    """`window, series_id, best_candidate, best_mase, candidates` of each cell's backtest."""
    frames = [
        series_metrics(conn, window, series_ids, "mase").with_columns(pl.lit(window).alias("window"))
        for window, series_ids in by_window.items()
    ]
    scores = pl.concat(frames) if frames else pl.DataFrame()
    if scores.height == 0:
        return scores
    return (
        scores.sort("value")
        .group_by("window", "series_id")
        .agg(
            pl.col("model_name").first().alias("best_candidate"),
            pl.col("value").first().round(4).alias("best_mase"),
            pl.len().alias("candidates"),
        )
    )


def _error_by_horizon(conn: Connection, window: str) -> MetadataValue | None:
    """Each candidate's fold error by horizon step, scaled per series so series pool fairly."""
    errors = step_errors(conn, window)
    if errors.height == 0:
        return None
    pooled = errors.group_by("model", "step").agg(pl.col("scaled").mean().alias("error"))
    png = error_by_horizon(
        pooled, title=f"Backtest error by horizon step, window {window}", metric="scaled MAE"
    )
    return MetadataValue.md(markdown_image(png, f"backtest error by horizon step, window {window}"))


@dataclass(frozen=True)
class _BacktestStep:
    context: AssetExecutionContext
    config: BacktestConfig
    database: DatabaseResource
    model_catalog: ModelCatalogResource
    mlflow_tracker: MlflowTrackerResource
    trainer_kwargs: dict[str, Any]


def _backtest_group(step: _BacktestStep, task: GroupTask) -> dict[str, Any]:
    """Backtest one (window, group): folds, ensembles, metrics, calibration, ensemble forecasts."""
    context, config, database, model_catalog = step.context, step.config, step.database, step.model_catalog
    group = model_catalog.group(task.group)
    plan = FoldPlan(
        horizon=task.horizon,
        n_windows=config.n_windows,
        step_size=config.step_size or task.horizon,
        refit=_refit(config.refit_local),
    )
    panel = pl.from_pandas(task.panel)
    afforded = affordable_folds(panel, plan, min_train=max(group.min_points - task.horizon, 2 * task.season))
    short = afforded.filter(pl.col("folds") < plan.n_windows)
    if short.height:
        context.log.warning(
            f"window {task.window}: {short.height} {task.group} series are too short for {plan.n_windows} "
            f"folds of {plan.horizon} steps: backtested on the folds they afford "
            f"({short.filter(pl.col('folds') == 0).height} on none)"
        )
    with database.transaction() as conn:
        versions = window_models(conn, task.window, task.group)
    folds, failed, stats = _bucketed_folds(step, task, plan, afforded, versions)
    # Each series' MASE scale comes from its history before its first fold; a series with no
    # fold gets one from all its history, so its published intervals are calibrated too.
    first_cutoffs = folds.group_by(UNIQUE_ID).agg(pl.col("cutoff").min().alias("first_cutoff"))
    in_sample = (
        panel.select(UNIQUE_ID, DS, "y")
        .join(first_cutoffs, on=UNIQUE_ID, how="left")
        .filter(pl.col("first_cutoff").is_null() | (pl.col(DS) <= pl.col("first_cutoff")))
        .drop("first_cutoff")
    )
    scales = series_scales(in_sample, task.season)
    if folds.height == 0:
        with database.transaction() as conn:
            replace_series_scales(conn, task.window, scales, context.run_id)
        return _summary(task, 0, [], failed, 0)
    candidates = folds.with_columns(pl.lit("family").alias("candidate"))
    members = None
    if config.ensembles:
        scores = fold_scores(folds, scales)
        ensembled = ensemble_folds(folds, scores, top_k=config.top_k)
        candidates = pl.concat(
            [candidates, ensembled.select(folds.columns).with_columns(pl.lit("ensemble").alias("candidate"))]
        )
        members = ensemble_members(scores, top_k=config.top_k)
    scored = candidates.drop("candidate")
    evaluation = evaluate_backtest(
        scored, in_sample.join(folds.select(UNIQUE_ID).unique(), on=UNIQUE_ID), task.season
    )
    coverage = heldout_coverage(scored, scales)
    calibration = _calibration_rows(
        conformal_quantiles(scored, scales), choose_interval_method(coverage), coverage
    )
    outcome = _GroupBacktest(
        task,
        versions,
        candidates,
        evaluation,
        calibration.with_columns(
            pl.lit(task.window).alias("window_key"), pl.lit(task.group).alias("freq_group")
        ),
        scales,
        members,
        stats,
    )
    tracked = _track_ensembles(step, outcome) if members is not None else {}
    try:
        with database.transaction() as conn:
            rows = _write_backtest(conn, context, outcome, tracked)
    except BaseException as exc:
        for model in tracked.values():
            step.mlflow_tracker.forget(model, f"database write failed: {exc}")
        raise
    context.log.info(
        f"window {task.window}: backtested {len(outcome.series_ids)} {task.group} series, "
        f"{candidates['model_name'].n_unique()} candidates, {rows} fold rows"
    )
    return _summary(task, len(outcome.series_ids), sorted(candidates["model_name"].unique()), failed, rows)


@dataclass(frozen=True)
class _GroupBacktest:
    """What one (window, group) backtest produced, before it is stored."""

    task: GroupTask
    versions: dict[str, tuple[int, str]]  # family -> (model_id, model_version) it scores
    candidates: pl.DataFrame  # fold rows of families and ensembles, with `candidate`
    evaluation: Any  # modeling.evaluation.BacktestEvaluation
    calibration: pl.DataFrame
    scales: pl.DataFrame
    members: pl.DataFrame | None  # unique_id, ensemble_name, model_name
    stats: list[Any]

    @property
    def series_ids(self) -> list[str]:
        """Every series of the group in this run, with folds or not: the cells it replaces."""
        return self.scales[UNIQUE_ID].unique().sort().to_list()


def _write_backtest(
    conn: Any, context: AssetExecutionContext, outcome: _GroupBacktest, tracked: dict[str, Any]
) -> int:
    """Everything one group's backtest stores, in the caller's transaction."""
    task = outcome.task
    note_run(context, conn)
    version_of = dict(outcome.versions)
    if outcome.members is not None:
        version_of.update(_register_ensembles(conn, context, task, outcome.members, tracked))
    rows = replace_backtest(
        conn,
        window=task.window,
        group=task.group,
        series_ids=outcome.series_ids,
        folds=_with_lineage(outcome.candidates, task, version_of),
        metrics=_metric_rows(outcome.evaluation, task),
        calibration=outcome.calibration,
        scales=outcome.scales,
        run_id=context.run_id,
    )
    if outcome.members is not None:
        replace_ensemble_members(conn, task.window, outcome.series_ids, outcome.members, context.run_id)
        _store_ensemble_forecasts(conn, context, task, outcome.members, version_of)
    record_resource_stats(conn, outcome.stats)
    return rows


def _track_ensembles(step: "_BacktestStep", outcome: _GroupBacktest) -> dict[str, Any]:
    """An MLflow registry version per ensemble of the group and window (spec: how it combines)."""
    task, members = outcome.task, outcome.members
    version = model_version(task.group, task.window, step.context.run_id)
    tags = lineage_tags(step.context, task, None)
    return {
        name: step.mlflow_tracker.log_model_spec(
            registered_name=registered_name(name, task.group),
            run_name=f"{name} {version}",
            spec={
                "family": name,
                "combination": "median"
                if "Median" in name
                else ("best" if name == "BestPerSeries" else "mean"),
                "ranked_on": "backtest folds, scaled MAE, leave-one-fold-out",
                "members": {"series": members.filter(pl.col("ensemble_name") == name)[UNIQUE_ID].n_unique()},
            },
            tags=tags,
        )
        for name in members["ensemble_name"].unique().sort().to_list()
    }


def _bucketed_folds(
    step: _BacktestStep,
    task: GroupTask,
    plan: FoldPlan,
    afforded: pl.DataFrame,
    versions: dict[str, tuple[int, str]],
) -> tuple[pl.DataFrame, dict[str, str], list[Any]]:
    """Folds of every family, with series grouped by the number of folds they afford.

    The libraries take one fold count per call, so each count is one call (at most
    `n_windows` of them), never one per series.
    """
    parts: list[pl.DataFrame] = []
    failed: dict[str, str] = {}
    stats: list[Any] = []
    for (count,), members in afforded.filter(pl.col("folds") > 0).partition_by("folds", as_dict=True).items():
        ids = members.select(UNIQUE_ID)
        subset = GroupTask(
            task.window,
            task.group,
            pl.from_pandas(task.panel).join(ids, on=UNIQUE_ID, how="semi").to_pandas(),
            task.freq,
            task.series_freq.join(ids, on=UNIQUE_ID, how="semi"),
            task.season,
            task.horizon,
        )
        folds, failures, costs = _family_folds(
            step, subset, FoldPlan(plan.horizon, int(count), plan.step_size, plan.refit), versions
        )
        parts.append(folds)
        failed.update(failures)
        stats.extend(costs)
    return (pl.concat(parts) if parts else empty_folds()), failed, stats


def _family_folds(
    step: _BacktestStep, task: GroupTask, plan: FoldPlan, versions: dict[str, tuple[int, str]]
) -> tuple[pl.DataFrame, dict[str, str], list[Any]]:
    """(folds of every family trained in the window, family -> why it has none, resource stats).

    Families are configured exactly as the window trained them (tuned parameters, drivers);
    a neural family that would start after the run's deadline is skipped and reported.
    """
    context, config, database, model_catalog = step.context, step.config, step.database, step.model_catalog
    catalog = model_catalog.catalog()
    with database.transaction() as conn:
        tuned = tuned_params(conn, task.window, task.group, list(catalog.families))
    parts: list[pl.DataFrame] = []
    local = [s for s in catalog.local(config.families) if s.name in versions]
    with measure("cpu") as usage:
        folds, failed = cross_validate_local(
            local_history(task, model_catalog),
            [(spec, {**spec.defaults, **tuned.get(spec.name, {})}) for spec in local],
            freq=task.freq,
            season=task.season,
            plan=plan,
            n_jobs=model_catalog.statsforecast_n_jobs,
        )
    parts.append(folds)
    for name, error in failed.items():
        context.log.error(f"window {task.window}: backtest of {name} on {task.group} failed: {error}")
    stats = [resource_stat(context.run_id, "backtest", "+".join(s.name for s in local), task, usage)]
    neural_plan = FoldPlan(plan.horizon, plan.n_windows, plan.step_size, _refit(config.refit_neural))
    for spec in [s for s in catalog.neural(config.families) if s.name in versions]:
        if config.deadline is not None and time.time() > config.deadline:
            context.log.warning(f"window {task.window}: {spec.name} not backtested: the time budget is spent")
            failed[spec.name] = "skipped: the run's time budget is spent"
            continue
        try:
            with database.transaction() as conn:
                recipe = neural_recipe(
                    conn,
                    task,
                    spec,
                    tuned.get(spec.name),
                    model_catalog,
                    max_steps=config.max_steps,
                    seed=config.seed,
                    trainer_kwargs=step.trainer_kwargs,
                    input_size=config.input_size,
                    batch_size=config.batch_size,
                )
            with measure(str(step.trainer_kwargs.get("accelerator", "cpu"))) as usage:
                parts.append(
                    cross_validate_neural(
                        task.panel, spec, recipe.params, recipe.shape, freq=task.freq, plan=neural_plan
                    )
                )
            stats.append(resource_stat(context.run_id, "backtest", spec.name, task, usage))
        except Exception as exc:
            failed[spec.name] = f"{type(exc).__name__}: {exc}"
            context.log.error(f"window {task.window}: backtest of {spec.name} on {task.group} failed: {exc}")
    folds = pl.concat([p.with_columns(pl.col("cutoff", DS).cast(pl.Datetime("us"))) for p in parts])
    return folds, failed, stats


def _refit(every: int) -> bool | int:
    """The libraries' refit argument: False (never), True (every fold) or every n folds."""
    return {0: False, 1: True}.get(every, every)


def _summary(
    task: GroupTask, series: int, candidates: list[str], failed: dict[str, str], rows: int
) -> dict[str, Any]:
    return {
        "window": task.window,
        "group": task.group,
        "series": series,
        "candidates": ", ".join(candidates) or "none",
        "failed": "; ".join(f"{k}: {v[:80]}" for k, v in failed.items()) or "none",
        "fold rows": rows,
    }


def _with_lineage(
    candidates: pl.DataFrame, task: GroupTask, version_of: dict[str, tuple[int, str]]
) -> pl.DataFrame:
    """Fold rows with their window, partition key, fold number and the model version scored."""
    names = candidates["model_name"].unique().to_list()
    ids = {name: version_of[name][0] for name in names if name in version_of}
    labels = {name: version_of[name][1] for name in names if name in version_of}
    return candidates.with_columns(
        *cell_columns(candidates, task),
        pl.col("model_name").replace_strict(labels, default="unversioned").alias("model_version"),
        pl.col("model_name").replace_strict(ids, default=None, return_dtype=pl.Int64).alias("model_id"),
        pl.col("cutoff").rank("dense").over(UNIQUE_ID).cast(pl.Int64).alias("fold"),
    )


def _metric_rows(evaluation: Any, task: GroupTask) -> pl.DataFrame:
    """Series-level, step-level and group-level metrics in the table's one long shape."""
    columns = ["series_id", "model_name", "step", "metric", "value"]
    per_series = evaluation.series.rename({UNIQUE_ID: "series_id"}).with_columns(
        pl.lit(None, dtype=pl.Int64).alias("step")
    )
    per_step = evaluation.steps.with_columns(
        pl.lit(None, dtype=pl.String).alias("series_id"), pl.col("step").cast(pl.Int64)
    )
    overall = evaluation.overall.with_columns(
        pl.lit(None, dtype=pl.String).alias("series_id"), pl.lit(None, dtype=pl.Int64).alias("step")
    )
    return pl.concat(
        [
            frame.select(columns).with_columns(pl.col("value").cast(pl.Float64))
            for frame in (per_series, per_step, overall)
        ]
    ).with_columns(pl.lit(task.window).alias("window_key"), pl.lit(task.group).alias("freq_group"))


def _calibration_rows(quantiles: pl.DataFrame, methods: pl.DataFrame, coverage: pl.DataFrame) -> pl.DataFrame:
    """Conformal quantiles with the interval method chosen per model and its held-out coverage."""
    chosen = methods.join(coverage, on=["model_name", "method"], how="left").select(
        "model_name", "level", pl.col("coverage").alias("heldout_coverage")
    )
    return (
        quantiles.join(methods, on="model_name", how="left")
        .with_columns(pl.col("method").fill_null("conformal"))
        .join(chosen.drop_nulls("level"), on=["model_name", "level"], how="left")
    )


def _register_ensembles(
    conn: Any, context: AssetExecutionContext, task: GroupTask, members: pl.DataFrame, tracked: dict[str, Any]
) -> dict[str, tuple[int, str]]:
    """A models row per ensemble of the window and group; its members per series are rows too."""
    version = model_version(task.group, task.window, context.run_id)
    registered = {}
    for name in members["ensemble_name"].unique().sort().to_list():
        model_id = register_model(
            conn,
            ModelRecord(
                name,
                version,
                "ensemble",
                task.window,
                context.run_id,
                params={"combination": name, "ranked_on": "backtest folds (scaled MAE)"},
                artifact_uri=tracked[name].artifact_uri if name in tracked else None,
                mlflow_run_id=tracked[name].mlflow_run_id if name in tracked else None,
                registry_version=tracked[name].registry_version if name in tracked else None,
                freq_group=task.group,
                code_version=code_version(context),
                series_count=members.filter(pl.col("ensemble_name") == name)[UNIQUE_ID].n_unique(),
            ),
        )
        registered[name] = (model_id, version)
    return registered


def _store_ensemble_forecasts(
    conn: Any,
    context: AssetExecutionContext,
    task: GroupTask,
    members: pl.DataFrame,
    version_of: dict[str, tuple[int, str]],
) -> int:
    """Combine the window's stored family forecasts into each ensemble's forecast, per series."""
    series_ids = members[UNIQUE_ID].unique().to_list()
    forecasts = window_forecasts(conn, task.window, series_ids, members["model_name"].unique().to_list())
    if forecasts.height == 0:
        return 0
    combined = combine_forecasts(forecasts, members)
    cutoffs = forecasts.group_by(UNIQUE_ID).agg(pl.col("cutoff").max())
    names = combined["model_name"].unique().to_list()
    frame = combined.join(cutoffs, on=UNIQUE_ID).with_columns(
        pl.col("model_name").replace_strict({n: version_of[n][1] for n in names}).alias("model_version"),
        pl.col("model_name")
        .replace_strict({n: version_of[n][0] for n in names}, return_dtype=pl.Int64)
        .alias("model_id"),
        *cell_columns(combined, task),
    )
    return store_predictions(conn, frame, context.run_id)
