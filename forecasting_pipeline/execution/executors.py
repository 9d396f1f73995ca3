"""The executor of every job, chosen by FP_EXECUTOR, so the same asset graph runs on one host,
on Celery workers or as Kubernetes jobs without a change of code."""

from __future__ import annotations

from dagster import ExecutorDefinition

from forecasting_pipeline.settings import EXECUTOR_VAR, Settings, SettingsError


def executor_for(settings: Settings) -> ExecutorDefinition | None:
    """None for `local` (Dagster's default: multiprocess for launched runs); the distributed
    executors are imported only when chosen, so loading definitions stays fast."""
    if settings.executor == "celery":
        from forecasting_pipeline.execution.celery_steps import queued_celery_executor

        return queued_celery_executor
    if settings.executor == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            raise SettingsError(
                f"{EXECUTOR_VAR}=k8s needs dagster-k8s: pip install 'forecasting-pipeline[kubernetes]'"
            ) from None
        return k8s_job_executor
    return None
