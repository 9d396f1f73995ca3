"""Run the asset jobs for a window (and a rectangle of series) against a Dagster instance.

This is what the CLI does in-process; in the UI the same selections are asset backfills.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, JobExecutionResult, execute_job
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository

from forecasting_pipeline.automation.jobs import (
    correlation_job,
    effects_job,
    forecast_job,
    history_job,
    ingest_job,
    series_study_job,
    train_job,
)
from forecasting_pipeline.automation.recovery import launcher_tags
from forecasting_pipeline.automation.tags import RANGE_END_TAG, RANGE_START_TAG
from forecasting_pipeline.partitions import series_date_range
from forecasting_pipeline.settings import Settings, load_settings

DEFINITIONS_MODULE = "forecasting_pipeline.definitions"

# Terminal output of in-process runs: compact step lines, or only warnings and errors.
STEP_LINES = {"progress": {}}
WARNINGS_ONLY = {"console": {"config": {"log_level": "WARNING"}}}


def run_partition_range(
    job_name: str,
    instance: DagsterInstance,
    first_key: str,
    last_key: str,
    *,
    run_config: Mapping[str, Any] | None = None,
    show_steps: bool = False,
    assets: Sequence[str] | None = None,
) -> ExecuteInProcessResult | JobExecutionResult:
    """One run of `job_name` (or of its `assets`) over the range first_key..last_key.

    With FP_EXECUTOR=local the run executes in this process. Otherwise this process coordinates
    and the job's executor (Celery workers, Kubernetes jobs) executes the steps, which load the
    job from its module: so the job is passed as reconstructable, not as an object.
    """
    from dagster import AssetKey

    from forecasting_pipeline.definitions import defs

    config = dict(run_config or {})
    config.setdefault("loggers", STEP_LINES if show_steps else WARNINGS_ONLY)
    tags = {RANGE_START_TAG: first_key, RANGE_END_TAG: last_key, **launcher_tags()}
    selection = [AssetKey(name) for name in assets] if assets else None
    settings = load_settings()
    if settings.executor == "local":
        return defs.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            tags=tags,
            run_config=config,
            asset_selection=selection,
            raise_on_error=False,  # callers report the failed step instead of a traceback
        )
    _require_capacity(settings)
    with execute_job(
        reconstructable_job(job_name),
        instance=instance,
        run_config=config,
        tags=tags,
        asset_selection=selection,
        raise_on_error=False,
    ) as result:
        return result


def reexecute_from_failure(instance: DagsterInstance, run_id: str) -> JobExecutionResult:
    """Run again the steps of a failed run that did not succeed (a lost worker's step, a crash),
    over the same partitions and configuration, reusing the outputs of those that did.

    The same as the UI's "Re-execute from failure", from the command line: the new run is the
    failed one's child, so lineage and the UI link the two.
    """
    from dagster import DagsterRunStatus, ReexecutionOptions

    from forecasting_pipeline.automation.recovery import HOST_TAG, PID_TAG

    parent = instance.get_run_by_id(run_id)
    if parent is None:
        raise ValueError(f"no run {run_id} in this deployment's instance")
    if parent.status != DagsterRunStatus.FAILURE:
        raise ValueError(f"run {run_id} is {parent.status.value}: only a failed run re-executes from failure")
    _require_capacity(load_settings())
    # The partitions a run covers are in its tags; who launched it is not carried over.
    inherited = {k: v for k, v in parent.tags.items() if k not in (HOST_TAG, PID_TAG)}
    with execute_job(
        reconstructable_job(parent.job_name),
        instance=instance,
        run_config=parent.run_config,
        tags={**inherited, **launcher_tags()},
        reexecution_options=ReexecutionOptions.from_failure(run_id, instance),
        raise_on_error=False,
    ) as result:
        return result


def _require_capacity(settings: Settings) -> None:
    """With Celery, a worker on every queue before anything is submitted (see `require_workers`)."""
    if settings.executor == "celery":
        from forecasting_pipeline.execution.celery_steps import require_workers

        require_workers(settings)


def reconstructable_job(job_name: str) -> ReconstructableJob:
    """`job_name` as a pointer into `forecasting_pipeline.definitions`, which any worker can load."""
    repository = ReconstructableRepository.for_module(DEFINITIONS_MODULE, "defs")
    return repository.get_reconstructable_job(job_name)


def ingest_rectangle(
    instance: DagsterInstance,
    first_window: str,
    last_window: str,
    series_keys: list[str],
    **options: Any,
) -> ExecuteInProcessResult:
    """One run over the rectangle first..last window × series_keys (keys in partition order)."""
    start, _ = series_date_range(first_window, series_keys)
    _, end = series_date_range(last_window, series_keys)
    return run_partition_range(ingest_job.name, instance, start, end, **options)


def version_history(instance: DagsterInstance, window: str, **options: Any) -> ExecuteInProcessResult:
    return run_partition_range(history_job.name, instance, window, window, **options)


def study_correlations(instance: DagsterInstance, window: str, **options: Any) -> ExecuteInProcessResult:
    return run_partition_range(correlation_job.name, instance, window, window, **options)


def study_series(
    instance: DagsterInstance, window: str, series_ids: list[str], **options: Any
) -> ExecuteInProcessResult:
    start, end = series_date_range(window, series_ids)
    return run_partition_range(series_study_job.name, instance, start, end, **options)


def measure_feature_effects(instance: DagsterInstance, window: str, **options: Any) -> ExecuteInProcessResult:
    return run_partition_range(effects_job.name, instance, window, window, **options)


def train_window(instance: DagsterInstance, window: str, **options: Any) -> ExecuteInProcessResult:
    return run_partition_range(train_job.name, instance, window, window, **options)


def forecast_window(
    instance: DagsterInstance, window: str, series_ids: list[str], **options: Any
) -> ExecuteInProcessResult:
    start, end = series_date_range(window, series_ids)
    return run_partition_range(forecast_job.name, instance, start, end, **options)
