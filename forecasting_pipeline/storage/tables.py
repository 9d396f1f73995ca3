"""Names of the domain tables and the one generic upsert every writer uses.

Column lists come from the database itself (reflection of the DDL in `sql/`), so the DDL stays
the single definition of each table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, Table
from sqlalchemy.dialects.postgresql import insert

SCHEMA = "forecasting"

DATASETS = "datasets"
SERIES = "series"
RUNS = "runs"
OBSERVATIONS = "observations"
QUARANTINE = "quarantine"
QUARANTINE_COUNTS = "quarantine_counts"
MODELS = "models"
METRICS = "metrics"
BACKTEST_FOLDS = "backtest_folds"
PREDICTIONS = "predictions"
LANDED_FILES = "landed_files"
STAGED_OBSERVATIONS = "staged_observations"
OBSERVATION_REVISIONS = "observation_revisions"
CELL_VERSIONS = "cell_versions"
DATA_QUALITY_RESULTS = "data_quality_results"
HISTORY_PENDING = "history_pending"
FORECAST_EXCLUSIONS = "forecast_exclusions"
EXPERIMENTS = "experiments"
RESOURCE_STATS = "resource_stats"
BACKTEST_METRICS = "backtest_metrics"
INTERVAL_CALIBRATION = "interval_calibration"
SERIES_SCALES = "series_scales"
ENSEMBLE_MEMBERS = "ensemble_members"
SELECTION_DECISIONS = "selection_decisions"
CHAMPION_EVENTS = "champion_events"
PUBLISHED_FORECASTS = "published_forecasts"
FEATURES = "features"
CORRELATIONS = "correlations"
GRANGER_TESTS = "granger_tests"
DRIVER_SELECTION = "driver_selection"
FEATURE_IMPORTANCES = "feature_importances"
LANDED_PATHS = "landed_paths"
CASCADE_QUEUE = "cascade_queue"
AUTOMATION_REQUESTS = "automation_requests"
FORECAST_ACCURACY = "forecast_accuracy"
DRIFT_EVENTS = "drift_events"
RUN_FAILURES = "run_failures"

# insertmanyvalues batches rows into multi-row VALUES; keep statements well under the
# 65,535 bind-parameter limit of the PostgreSQL protocol.
_ROWS_PER_STATEMENT = 2_000


@cache
def _metadata(engine_url: str) -> MetaData:
    return MetaData(schema=SCHEMA)


def table(engine: Engine | Connection, name: str) -> Table:
    """The reflected `forecasting.<name>` table (cached per database)."""
    bind_engine = engine.engine if isinstance(engine, Connection) else engine
    metadata = _metadata(str(bind_engine.url))
    qualified = f"{SCHEMA}.{name}"
    if qualified not in metadata.tables:
        Table(name, metadata, autoload_with=bind_engine)
    return metadata.tables[qualified]


def upsert(
    conn: Connection,
    name: str,
    rows: Iterable[Mapping[str, Any]],
    key_columns: Sequence[str],
    update_columns: Sequence[str] | None = None,
) -> int:
    """Insert `rows`, replacing the non-key columns of rows whose key already exists.

    With `update_columns=[]` existing rows are left untouched (insert-if-absent). Returns the
    number of rows sent.
    """
    target = table(conn, name)
    batch: list[Mapping[str, Any]] = []
    sent = 0
    for row in rows:
        batch.append(row)
        if len(batch) >= _ROWS_PER_STATEMENT:
            sent += _upsert_batch(conn, target, batch, key_columns, update_columns)
            batch = []
    if batch:
        sent += _upsert_batch(conn, target, batch, key_columns, update_columns)
    return sent


def _upsert_batch(
    conn: Connection,
    target: Table,
    rows: list[Mapping[str, Any]],
    key_columns: Sequence[str],
    update_columns: Sequence[str] | None,
) -> int:
    statement = insert(target)
    columns = update_columns
    if columns is None:
        columns = [c for c in rows[0] if c not in key_columns]
    if columns:
        statement = statement.on_conflict_do_update(
            index_elements=list(key_columns),
            set_={c: statement.excluded[c] for c in columns},
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(key_columns))
    conn.execute(statement, rows)
    return len(rows)
