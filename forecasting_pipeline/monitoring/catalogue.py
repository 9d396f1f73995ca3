"""Every metric the exporter serves: name, type, labels and meaning, in one list.

The collector builds its families from these specs, `docs/monitoring.md` is checked against
them, and the tests check that every metric an alert rule or a dashboard panel names is one of
them, so a renamed metric cannot leave a silent panel or an alert that never fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as scraped; a counter's name ends in `_total`
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = ()


def _spec(name: str, kind: MetricKind, help_text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name=name, kind=kind, help=help_text, labels=labels)


# The collector's sections: each computed on its own connection, its failures counted apart.
RUNS = "runs"
ASSETS = "assets"
CHECKS = "checks"
INGESTION = "ingestion"
DATASETS = "datasets"
MODELS = "models"
ACCURACY = "accuracy"
DRIFT = "drift"
# A tuning, training or backtest: what it was, of which family and frequency group, where it ran.
FIT_LABELS = ("stage", "model", "freq_group", "device")
SECTIONS = (RUNS, ASSETS, CHECKS, INGESTION, DATASETS, MODELS, ACCURACY, DRIFT)

METRICS: tuple[MetricSpec, ...] = (
    # Pipeline health: Dagster runs, steps and pools.
    _spec(
        "fp_dagster_runs_total",
        "counter",
        "Dagster runs that ended, by job and status (SUCCESS, FAILURE, CANCELED).",
        "job",
        "status",
    ),
    _spec(
        "fp_dagster_runs_active",
        "gauge",
        "Dagster runs not ended yet, by job and status (QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING).",
        "job",
        "status",
    ),
    _spec(
        "fp_dagster_job_last_run_failed",
        "gauge",
        "1 when the job's newest ended run failed, 0 when it succeeded or was canceled.",
        "job",
    ),
    _spec(
        "fp_dagster_job_last_run_end_timestamp_seconds",
        "gauge",
        "When the job's newest ended run ended (Unix time).",
        "job",
    ),
    _spec(
        "fp_dagster_run_duration_seconds",
        "gauge",
        "Wall time of the job's runs that ended "
        "within the lookback (FP_METRICS_LOOKBACK_HOURS): quantile 0.5, 0.95 or 1 (the longest).",
        "job",
        "quantile",
    ),
    _spec(
        "fp_dagster_step_duration_seconds",
        "gauge",
        "Wall time of each step (op) in the runs that ended within the lookback: quantile 0.5, 0.95 or 1.",
        "step",
        "quantile",
    ),
    _spec("fp_dagster_pool_slots", "gauge", "Slots of a Dagster concurrency pool (its limit).", "pool"),
    _spec("fp_dagster_pool_slots_in_use", "gauge", "Slots of the pool held by running steps.", "pool"),
    _spec("fp_dagster_pool_pending_steps", "gauge", "Steps waiting for a slot of the pool.", "pool"),
    _spec(
        "fp_dagster_daemon_heartbeat_age_seconds",
        "gauge",
        "Seconds since each dagster-daemon loop (SENSOR, SCHEDULER, BACKFILL, QUEUED_RUN_COORDINATOR, "
        "MONITORING, …) last reported; absent where no daemon ever ran (a CLI-only deployment).",
        "daemon",
    ),
    _spec(
        "fp_dagster_daemon_errors",
        "gauge",
        "Errors the daemon loop reported in its newest heartbeat (a sensor or schedule that raises).",
        "daemon",
    ),
    # Assets: freshness and partition states.
    _spec(
        "fp_asset_last_materialization_timestamp_seconds",
        "gauge",
        "When the asset's newest materialization (of any partition) was stored (Unix time).",
        "asset",
    ),
    _spec(
        "fp_asset_materialization_age_seconds",
        "gauge",
        "Seconds since the asset's newest materialization, at scrape time.",
        "asset",
    ),
    _spec(
        "fp_asset_partitions",
        "gauge",
        "The asset's partitions by state: materialized, failed (the newest attempt failed) or in_progress.",
        "asset",
        "state",
    ),
    _spec(
        "fp_asset_stale_partitions",
        "gauge",
        "The asset's materialized partitions whose input data changed since: cells in the retraining "
        "cascade's queue whose partition of this asset was materialized before the change.",
        "asset",
    ),
    # Data quality: asset checks.
    _spec(
        "fp_asset_check_passed",
        "gauge",
        "1 when the check's newest evaluation passed, 0 when it "
        "failed; blocking=true checks stop the data they guard.",
        "asset",
        "check",
        "blocking",
    ),
    _spec(
        "fp_asset_check_last_evaluation_timestamp_seconds",
        "gauge",
        "When the check was last evaluated (Unix time).",
        "asset",
        "check",
        "blocking",
    ),
    # Ingestion.
    _spec(
        "fp_landed_files",
        "gauge",
        "Versions of landed files by status: staged (waiting for "
        "ingestion), held (a blocking check failed), ingested or rejected.",
        "status",
    ),
    _spec(
        "fp_rows_ingested_total",
        "counter",
        "Rows of landed files accepted into the observations by ingestion runs.",
    ),
    _spec(
        "fp_rows_pending",
        "gauge",
        "Valid rows of staged or held files, not ingested yet.",
        "status",
    ),
    _spec(
        "fp_rows_quarantined_total",
        "counter",
        "Rows refused at ingestion and kept in forecasting.quarantine, by reason.",
        "reason",
    ),
    # Datasets: staleness.
    _spec("fp_dataset_series", "gauge", "Series registered in the dataset.", "dataset"),
    _spec(
        "fp_dataset_last_update_timestamp_seconds",
        "gauge",
        "When data for the dataset last landed (Unix time): its series' newest registration.",
        "dataset",
    ),
    _spec(
        "fp_dataset_newest_observation_timestamp_seconds",
        "gauge",
        "Timestamp of the dataset's newest observation (Unix time, data time).",
        "dataset",
    ),
    _spec(
        "fp_dataset_stale_after_seconds",
        "gauge",
        "FP_STALE_DATA_AFTER_HOURS in seconds: a dataset with no new data for longer is stale.",
    ),
    # Models: cost of tuning and training.
    _spec(
        "fp_model_fit_seconds",
        "gauge",
        "Wall time of the newest tuning, training or backtest of a model family on a frequency group.",
        *FIT_LABELS,
    ),
    _spec(
        "fp_model_fit_peak_rss_bytes",
        "gauge",
        "Peak resident memory of that tuning, training or backtest.",
        *FIT_LABELS,
    ),
    _spec(
        "fp_model_fit_gpu_peak_bytes",
        "gauge",
        "Peak accelerator memory of that run (absent on CPU).",
        *FIT_LABELS,
    ),
    _spec(
        "fp_model_fit_series",
        "gauge",
        "Series in that run.",
        *FIT_LABELS,
    ),
    # Accuracy of published forecasts, once their actuals arrived.
    _spec(
        "fp_forecast_mase",
        "gauge",
        "Rolling MASE of the champions' forecasts over the newest "
        "FP_DRIFT_WINDOWS scored windows, weighted by points.",
        "freq_group",
    ),
    _spec(
        "fp_forecast_backtest_mase",
        "gauge",
        "MASE the backtests promised for those same forecasts (the drift baseline).",
        "freq_group",
    ),
    _spec(
        "fp_forecast_smape",
        "gauge",
        "Rolling sMAPE in percent (0–200) of the same forecasts.",
        "freq_group",
    ),
    _spec(
        "fp_forecast_interval_coverage",
        "gauge",
        "Share of actuals inside the forecasts' prediction intervals, by nominal level (80, 95).",
        "freq_group",
        "level",
    ),
    _spec(
        "fp_forecast_interval_nominal_coverage",
        "gauge",
        "What an interval of the level should cover (0.80, 0.95).",
        "level",
    ),
    _spec(
        "fp_forecast_scored_series",
        "gauge",
        "Series with scored forecasts in those windows.",
        "freq_group",
    ),
    _spec(
        "fp_forecast_newest_scored_window_timestamp_seconds",
        "gauge",
        "Start of the newest window whose actuals scored a forecast (Unix time).",
    ),
    # Drift.
    _spec(
        "fp_drift_threshold_ratio",
        "gauge",
        "FP_DRIFT_THRESHOLD: rolling MASE over backtest MASE above which a series is retrained.",
    ),
    _spec(
        "fp_drift_flagged_series",
        "gauge",
        "Series the drift sensor flagged in the newest window it flagged any.",
    ),
    _spec("fp_drift_events_total", "counter", "Degradations the drift sensor acted on."),
    _spec(
        "fp_drift_retrains_pending",
        "gauge",
        "Drift retraining requests recorded but not yet submitted to Dagster.",
    ),
    # The exporter itself.
    _spec(
        "fp_exporter_section_seconds",
        "gauge",
        "Time the last scrape spent computing a section.",
        "section",
    ),
    _spec(
        "fp_exporter_section_errors_total",
        "counter",
        "Scrapes in which a section failed (its metrics were left out).",
        "section",
    ),
)

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in METRICS}
