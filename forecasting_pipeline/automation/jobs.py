"""Asset jobs, one per partitions definition.

A run targets one partitions definition, so the series × date stages and the window-level
stages are separate jobs; the UI's asset backfills (and `demo`) chain them.
"""

from __future__ import annotations

from dagster import AssetCheckKey, AssetKey, AssetSelection, define_asset_job

from forecasting_pipeline.partitions import date_partitions, series_date_partitions

ingest_job = define_asset_job(
    name="ingest_observations",
    # The readability check reads the manifest, not the cells: the new-data sensor reports it.
    selection=AssetSelection.assets("raw_observations")
    - AssetSelection.checks(AssetCheckKey(AssetKey("raw_observations"), "landed_files_readable")),
    partitions_def=series_date_partitions,
    description="Accept staged observations for a rectangle of series × windows, with quality checks.",
)

history_job = define_asset_job(
    name="version_observation_history",
    selection=AssetSelection.assets("observation_history"),
    partitions_def=date_partitions,
    description="Fold every cell up to a window into the window's history data version.",
)

correlation_job = define_asset_job(
    name="study_correlations",
    selection=AssetSelection.assets("correlation_study"),
    partitions_def=date_partitions,
    description="Correlate every target with its drivers and its frequency group's peers, per window.",
)

series_study_job = define_asset_job(
    name="study_series",
    selection=AssetSelection.assets("feature_table", "granger_study"),
    partitions_def=series_date_partitions,
    description="Build the feature table and test drivers for Granger causality, per series × window.",
)

train_job = define_asset_job(
    name="train_models",
    selection=AssetSelection.assets(
        "training_panel", "hyperparameter_search", "global_models", "local_models"
    ),
    partitions_def=date_partitions,
    description="Build a window's frequency-grouped panel, tune each family, train every family.",
)

forecast_job = define_asset_job(
    name="publish_forecasts",
    selection=AssetSelection.assets("backtest_folds", "model_selection", "predictions"),
    partitions_def=series_date_partitions,
    description="Backtest every candidate, choose champions through the blocking promotion check and "
    "publish their calibrated forecasts, per series × window.",
)

effects_job = define_asset_job(
    name="measure_feature_effects",
    selection=AssetSelection.assets("feature_effects"),
    partitions_def=date_partitions,
    description="Permutation importance of features and drivers on the champions' backtest error.",
)

accuracy_job = define_asset_job(
    name="score_forecast_accuracy",
    selection=AssetSelection.assets("forecast_accuracy"),
    partitions_def=series_date_partitions,
    description="Score earlier published forecasts against the actuals of a rectangle of series × windows.",
)

JOBS = [
    ingest_job,
    history_job,
    correlation_job,
    series_study_job,
    train_job,
    forecast_job,
    effects_job,
    accuracy_job,
]
