"""What the experiment engine records besides forecasts: set-aside series, studies, resource use."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.schemas import UNIQUE_ID
from forecasting_pipeline.storage.bulk import copy_frame
from forecasting_pipeline.storage.tables import (
    DATASETS,
    EXPERIMENTS,
    FORECAST_EXCLUSIONS,
    RESOURCE_STATS,
    SCHEMA,
    SERIES,
)

_EXCLUSION_COLUMNS = ("series_id", "window_key", "freq_group", "reason", "detail", "dagster_run_id")


def record_exclusions(conn: Connection, window: str, excluded: pl.DataFrame, run_id: str) -> int:
    """Replace a window's set-aside series (unique_id, freq_group, reason, detail) in bulk.

    The window's previous list is dropped first: a series that became forecastable with new
    data is no longer reported as set aside.
    """
    conn.execute(text(f"DELETE FROM {SCHEMA}.{FORECAST_EXCLUSIONS} WHERE window_key = :w"), {"w": window})
    rows = excluded.rename({UNIQUE_ID: "series_id"}).with_columns(
        pl.lit(window).alias("window_key"), pl.lit(run_id).alias("dagster_run_id")
    )
    return copy_frame(conn, f"{SCHEMA}.{FORECAST_EXCLUSIONS}", rows, _EXCLUSION_COLUMNS)


@dataclass(frozen=True)
class ExperimentRecord:
    study_name: str
    model_name: str
    freq_group: str
    window_key: str
    trial_budget: int
    finished_trials: int
    best_value: float | None
    best_params: dict[str, Any]
    warm_started_from: str | None
    dagster_run_id: str


def record_experiment(conn: Connection, experiment: ExperimentRecord) -> None:
    """Upsert a study's summary; the window it was warm-started from is kept across resumptions."""
    row = {**asdict(experiment), "best_params": json.dumps(experiment.best_params, default=str)}
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{EXPERIMENTS} (study_name, model_name, freq_group, window_key,
                trial_budget, finished_trials, best_value, best_params, warm_started_from, dagster_run_id)
            VALUES (:study_name, :model_name, :freq_group, :window_key, :trial_budget, :finished_trials,
                :best_value, CAST(:best_params AS jsonb), :warm_started_from, :dagster_run_id)
            ON CONFLICT (study_name) DO UPDATE SET
                trial_budget = EXCLUDED.trial_budget, finished_trials = EXCLUDED.finished_trials,
                best_value = EXCLUDED.best_value, best_params = EXCLUDED.best_params,
                warm_started_from = COALESCE(EXCLUDED.warm_started_from, {EXPERIMENTS}.warm_started_from),
                dagster_run_id = EXCLUDED.dagster_run_id, updated_at = now()
            """
        ),
        row,
    )


def tuned_params(
    conn: Connection, window: str, freq_group: str, model_names: Sequence[str]
) -> dict[str, dict]:
    """Best parameters of each family's study for (group, window); families never tuned are absent."""
    result = conn.execute(
        text(
            f"""
            SELECT model_name, best_params FROM {SCHEMA}.{EXPERIMENTS}
            WHERE window_key = :w AND freq_group = :g AND model_name = ANY(:names)
              AND best_value IS NOT NULL
            """
        ),
        {"w": window, "g": freq_group, "names": list(model_names)},
    )
    return {row.model_name: dict(row.best_params) for row in result}


@dataclass(frozen=True)
class ResourceStat:
    dagster_run_id: str
    stage: str  # 'tuning' | 'training'
    model_name: str
    freq_group: str
    window_key: str
    series_count: int
    wall_seconds: float
    peak_rss_mb: float
    device: str
    gpu_peak_mb: float | None = None
    model_id: int | None = None


def record_resource_stats(conn: Connection, stats: Sequence[ResourceStat]) -> None:
    if stats:
        conn.execute(
            text(
                f"""
                INSERT INTO {SCHEMA}.{RESOURCE_STATS} (dagster_run_id, stage, model_name, freq_group,
                    window_key, series_count, wall_seconds, peak_rss_mb, device, gpu_peak_mb, model_id)
                VALUES (:dagster_run_id, :stage, :model_name, :freq_group, :window_key, :series_count,
                    :wall_seconds, :peak_rss_mb, :device, :gpu_peak_mb, :model_id)
                """
            ),
            [asdict(stat) for stat in stats],
        )


def future_drivers(conn: Connection, series_ids: Sequence[str]) -> set[str]:
    """Drivers declared future-known by the datasets of these series (known for the horizon)."""
    result = conn.execute(
        text(
            f"""
            SELECT DISTINCT unnest(d.future_drivers) FROM {SCHEMA}.{DATASETS} d
            WHERE d.dataset_id IN (
                SELECT DISTINCT dataset_id FROM {SCHEMA}.{SERIES} WHERE series_id = ANY(:ids)
            )
            """
        ),
        {"ids": list(series_ids)},
    )
    return {row[0] for row in result}
