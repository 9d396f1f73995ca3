"""Runs, models and metrics: what ties a stored forecast to the code and model that made it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from forecasting_pipeline.storage.tables import METRICS, MODELS, RUNS, SCHEMA, table, upsert


def record_run(conn: Connection, run_id: str, job_name: str, code_version: str) -> None:
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{RUNS} (dagster_run_id, job_name, code_version)
            VALUES (:run_id, :job_name, :code_version)
            ON CONFLICT (dagster_run_id) DO UPDATE SET last_seen_at = now()
            """
        ),
        {"run_id": run_id, "job_name": job_name, "code_version": code_version},
    )


@dataclass(frozen=True)
class ModelRecord:
    model_name: str
    model_version: str
    scope: str  # 'global' | 'local'
    window_key: str
    dagster_run_id: str
    artifact_uri: str | None = None
    device: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    registry_version: str | None = None
    freq_group: str | None = None
    data_version: str | None = None
    code_version: str | None = None
    series_count: int | None = None


def register_model(conn: Connection, model: ModelRecord) -> int:
    """Store (or refresh) a model version; returns its model_id."""
    upsert(conn, MODELS, [model.__dict__], key_columns=("model_name", "model_version"))
    models = table(conn, MODELS)
    return conn.execute(
        models.select()
        .with_only_columns(models.c.model_id)
        .where(models.c.model_name == model.model_name, models.c.model_version == model.model_version)
    ).scalar_one()


@dataclass(frozen=True)
class MetricRecord:
    model_id: int | None
    series_id: str | None
    window_key: str
    metric: str
    value: float
    dagster_run_id: str


def record_metrics(conn: Connection, metrics: Iterable[MetricRecord]) -> int:
    return upsert(
        conn,
        METRICS,
        (m.__dict__ for m in metrics),
        key_columns=("model_id", "series_id", "window_key", "metric"),
    )


def window_models(conn: Connection, window: str, group: str) -> dict[str, tuple[int, str]]:
    """model_name -> (model_id, model_version) of each family's newest version for (window, group).

    A backtest scores these versions' configurations; fold rows point at them.
    """
    rows = conn.execute(
        text(
            f"SELECT DISTINCT ON (model_name) model_name, model_id, model_version FROM {SCHEMA}.{MODELS} "
            "WHERE window_key = :window AND freq_group = :group AND scope IN ('global', 'local') "
            "ORDER BY model_name, trained_at DESC, model_id DESC"
        ),
        {"window": window, "group": group},
    )
    return {name: (model_id, version) for name, model_id, version in rows}
