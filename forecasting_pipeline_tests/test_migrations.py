from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from forecasting_pipeline.settings import load_settings
from forecasting_pipeline.storage.migrations import apply_migrations, discover_migrations

DOMAIN_TABLES = {
    "datasets",
    "series",
    "runs",
    "observations",
    "quarantine",
    "models",
    "metrics",
    "backtest_folds",
    "predictions",
    "schema_migrations",
    "backtest_metrics",
    "interval_calibration",
    "series_scales",
    "ensemble_members",
    "selection_decisions",
    "champion_events",
    "published_forecasts",
}


def test_migrations_create_the_domain_schema_once(fresh_database):
    engine = create_engine(fresh_database())
    sql_dir = load_settings().sql_dir
    assert apply_migrations(engine, sql_dir) == [m.version for m in discover_migrations(sql_dir)]
    assert apply_migrations(engine, sql_dir) == []
    with engine.connect() as conn:
        tables = set(
            conn.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'forecasting'")
            ).scalars()
        )
        schemas = set(conn.execute(text("SELECT schema_name FROM information_schema.schemata")).scalars())
    engine.dispose()
    assert tables >= DOMAIN_TABLES
    # Dagster owns public.runs and Optuna its own alembic_version: each lives in its own schema.
    assert {"forecasting", "optuna"} <= schemas


def test_predictions_columns_carry_lineage(db_engine):
    with db_engine.connect() as conn:
        columns = set(
            conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'forecasting' AND table_name = 'predictions'"
                )
            ).scalars()
        )
    assert {
        "series_id",
        "ds",
        "step",
        "yhat",
        "lo_80",
        "hi_80",
        "lo_95",
        "hi_95",
        "model_name",
        "model_version",
        "dagster_run_id",
        "partition_key",
        "window_key",
        "created_at",
    } <= columns


def test_misnamed_migration_files_are_refused(tmp_path):
    (tmp_path / "001_ok.sql").write_text("SELECT 1;")
    (tmp_path / "later.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="NNN_snake_case"):
        discover_migrations(tmp_path)


def test_duplicate_migration_numbers_are_refused(tmp_path):
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "001_b.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="share a number"):
        discover_migrations(tmp_path)
