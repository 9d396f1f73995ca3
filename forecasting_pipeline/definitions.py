"""The single Dagster entry point: wires assets, jobs and resources.

Loading this module must stay fast (it runs in every step subprocess, sensor tick and UI
reload): heavy libraries are imported inside assets and resource methods, never here.
"""

from __future__ import annotations

from dagster import Definitions, EnvVar, colored_console_logger

from forecasting_pipeline.assets.backtest import backtest_folds
from forecasting_pipeline.assets.feature_effects import feature_effects
from forecasting_pipeline.assets.features import feature_table
from forecasting_pipeline.assets.forecast import predictions
from forecasting_pipeline.assets.ingest import observation_history, raw_observations
from forecasting_pipeline.assets.monitoring import forecast_accuracy
from forecasting_pipeline.assets.selection import model_selection, promotions_confirmed
from forecasting_pipeline.assets.studies import correlation_study, granger_study
from forecasting_pipeline.assets.training import global_models, local_models, training_panel
from forecasting_pipeline.assets.tuning import hyperparameter_search
from forecasting_pipeline.automation.cascade import retraining_cascade_sensor
from forecasting_pipeline.automation.drift import accuracy_drift_sensor
from forecasting_pipeline.automation.failures import run_failure_recorder
from forecasting_pipeline.automation.jobs import JOBS
from forecasting_pipeline.automation.new_data import new_data_sensor
from forecasting_pipeline.automation.progress import progress_logger
from forecasting_pipeline.automation.schedules import publish_after_model_update, weekly_model_update
from forecasting_pipeline.checks.landed_files import landed_files_readable
from forecasting_pipeline.execution.executors import executor_for
from forecasting_pipeline.resources.accelerator import AcceleratorResource
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.mlflow_tracker import MlflowTrackerResource
from forecasting_pipeline.resources.model_catalog import ModelCatalogResource
from forecasting_pipeline.resources.parquet_io import PartitionedParquetIOManager
from forecasting_pipeline.settings import DATABASE_URL_VAR, MLFLOW_TRACKING_URI_VAR, Settings, load_settings


def build_resources(settings: Settings) -> dict[str, object]:
    """Resources for a deployment; the database URL stays an EnvVar since it may hold a password."""
    return {
        "database": DatabaseResource(url=EnvVar(DATABASE_URL_VAR)),
        "parquet_io_manager": PartitionedParquetIOManager(base_dir=settings.storage_uri),
        "accelerator": AcceleratorResource(
            cuda_precision=settings.cuda_precision,
            devices=settings.training_devices,
            strategy=settings.training_strategy,
        ),
        "model_catalog": ModelCatalogResource(
            path=str(settings.model_catalog) if settings.model_catalog else None,
            horizon_override=settings.forecast_horizon,
            statsforecast_n_jobs=settings.statsforecast_n_jobs,
        ),
        "mlflow_tracker": MlflowTrackerResource(
            tracking_uri=EnvVar(MLFLOW_TRACKING_URI_VAR)
            if settings.mlflow_tracking_uri
            else settings.default_mlflow_tracking_uri,
            artifact_location=settings.mlflow_artifact_location,
        ),
    }


_settings = load_settings()

defs = Definitions(
    assets=[
        raw_observations,
        observation_history,
        feature_table,
        correlation_study,
        granger_study,
        training_panel,
        hyperparameter_search,
        global_models,
        local_models,
        backtest_folds,
        model_selection,
        predictions,
        feature_effects,
        forecast_accuracy,
    ],
    asset_checks=[promotions_confirmed, landed_files_readable],
    jobs=JOBS,
    sensors=[
        new_data_sensor,
        retraining_cascade_sensor,
        accuracy_drift_sensor,
        publish_after_model_update,
        run_failure_recorder,
    ],
    schedules=[weekly_model_update],
    resources=build_resources(_settings),
    # FP_EXECUTOR: None keeps Dagster's default (multiprocess for launched runs).
    executor=executor_for(_settings),
    # Only loggers named in a run's config are used; without any, Dagster's console default.
    loggers={"console": colored_console_logger, "progress": progress_logger},
)
