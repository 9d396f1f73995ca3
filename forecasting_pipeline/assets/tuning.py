"""`hyperparameter_search`: one resumable Optuna study per (family, frequency group, window).

Studies live in the project's PostgreSQL (schema `optuna`), so a study cut short by a killed run
or its time budget resumes to exactly its trial budget, and a window's study starts from the
previous window's best parameters. The best parameters land in `forecasting.experiments`, where
`global_models` and `local_models` read them.
"""

from typing import Any

import pandas as pd
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue
from pydantic import Field

from forecasting_pipeline.assets.conventions import GPU_OP_TAGS, GPU_POOL, note_run, pipeline_asset
from forecasting_pipeline.assets.model_inputs import (
    exogenous_inputs,
    local_history,
    neural_shape,
    resource_stat,
)
from forecasting_pipeline.assets.run_defaults import preset_default
from forecasting_pipeline.modeling.catalog import FamilySpec
from forecasting_pipeline.modeling.frequency_groups import GroupTask, group_tasks
from forecasting_pipeline.modeling.tuning import local_objective, neural_objective, neural_pruner
from forecasting_pipeline.modeling.usage import measure
from forecasting_pipeline.partitions import date_partitions
from forecasting_pipeline.resources.accelerator import AcceleratorResource
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.model_catalog import ModelCatalogResource
from forecasting_pipeline.storage.experiments import (
    ExperimentRecord,
    record_experiment,
    record_resource_stats,
)


class SearchConfig(Config):
    """Budgets of the window's studies; a study already at its budget runs nothing."""

    families: list[str] | None = Field(
        default=None, description="Families to tune; default: every enabled family with a search space."
    )
    trials: int = Field(
        default=preset_default("trials", 4), ge=0, description="Finished trials each study ends with."
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Wall-clock cap per study and run; the rest resumes next run."
    )
    trial_max_steps: int = Field(
        default=min(50, preset_default("max_steps", 50)),
        gt=0,
        description="Training steps of one neural trial.",
    )
    warm_start_trials: int = Field(default=1, ge=0, description="Previous window's best trials tried first.")
    seed: int = 1


@pipeline_asset(
    lazy_modules=("forecasting_pipeline.modeling.search",),
    partitions_def=date_partitions,
    group_name="training",
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    kinds={"optuna", "postgres"},
)
def hyperparameter_search(
    context: AssetExecutionContext,
    config: SearchConfig,
    training_panel: dict[str, pd.DataFrame],
    database: DatabaseResource,
    accelerator: AcceleratorResource,
    model_catalog: ModelCatalogResource,
) -> MaterializeResult:
    """Tune every searchable family on each frequency group of the window."""
    from forecasting_pipeline.modeling import search  # imports Optuna: only when studies run

    catalog = model_catalog.catalog()
    families = [
        spec
        for spec in (*catalog.neural(config.families), *catalog.local(config.families))
        if spec.search_space
    ]
    storage = search.optuna_storage(database.url)
    studies: list[dict[str, Any]] = []
    for window, panel in training_panel.items():
        for task in group_tasks(window, panel, model_catalog.horizon):
            for spec in families:
                studies.append(
                    _tune(context, task, spec, config, storage, database, accelerator, model_catalog)
                )
    return MaterializeResult(
        metadata={
            "studies": MetadataValue.json(studies),
            "trials_run": sum(s["trials run"] for s in studies),
        }
    )


def _tune(
    context: AssetExecutionContext,
    task: GroupTask,
    spec: FamilySpec,
    config: SearchConfig,
    storage: Any,
    database: DatabaseResource,
    accelerator: AcceleratorResource,
    model_catalog: ModelCatalogResource,
) -> dict[str, Any]:
    if spec.scope == "global":
        device = accelerator.resolve_device()
        with database.transaction() as conn:
            hist, futr, _ = exogenous_inputs(conn, task, spec)
        shape = neural_shape(
            task,
            model_catalog,
            max_steps=config.trial_max_steps,
            seed=config.seed,
            trainer_kwargs=accelerator.trainer_kwargs(),
            hist_exog=hist,
            futr_exog=futr,
        )
        objective = neural_objective(task.panel, spec, shape, task.freq)
        pruner = neural_pruner(config.trial_max_steps)
    else:
        device = "cpu"
        pruner = None  # a one-fold backtest reports no intermediate values
        objective = local_objective(
            local_history(task, model_catalog),
            spec,
            freq=task.freq,
            season=task.season,
            horizon=task.horizon,
            n_jobs=model_catalog.statsforecast_n_jobs,
        )
    from forecasting_pipeline.modeling import search

    name = search.study_name(spec.name, task.group, task.window)
    budget = search.SearchBudget(config.trials, config.timeout_seconds, config.warm_start_trials)
    with measure(device) as usage:
        outcome = search.run_study(
            storage,
            name,
            objective,
            budget,
            seed=config.seed,
            previous_study=search.previous_window_study(storage, spec.name, task.group, task.window),
            pruner=pruner,
            run_tag=context.run_id,
        )
    with database.transaction() as conn:
        note_run(context, conn)
        record_experiment(
            conn,
            ExperimentRecord(
                name,
                spec.name,
                task.group,
                task.window,
                config.trials,
                outcome.finished_trials,
                outcome.best_value,
                outcome.best_params,
                outcome.warm_started_from,
                context.run_id,
            ),
        )
        if outcome.trials_run:
            record_resource_stats(
                conn,
                [
                    resource_stat(context.run_id, "tuning", spec.name, task, usage),
                ],
            )
    context.log.info(
        f"{name}: {outcome.trials_run} trials run, {outcome.finished_trials}/{config.trials} finished"
        + (
            f", best {outcome.best_value:.4g} with {_brief(outcome.best_params)}"
            if outcome.best_value is not None
            else ""
        )
        + (f"; warm-started from {outcome.warm_started_from}" if outcome.warm_started_from else "")
    )
    return {
        "study": name,
        "trials run": outcome.trials_run,
        "finished": outcome.finished_trials,
        "interrupted": outcome.interrupted_trials,
        "best value": outcome.best_value,
        "best params": outcome.best_params,
        "warm start": outcome.warm_started_from,
    }


def _brief(params: dict[str, Any]) -> str:
    """Parameters for a log line: floats to four significant digits."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
