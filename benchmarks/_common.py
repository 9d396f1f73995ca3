"""Shared set-up of the ingestion benchmarks: a fresh database, a deployment, synthetic files.

The series are synthetic (seeded random walks with a daily cycle) because the benchmarks
measure throughput and bookkeeping, not accuracy; the shapes (ids, hourly timestamps, drivers)
are those of real landed files.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from sqlalchemy import create_engine, text

RESULTS = Path(__file__).parent / "results"
SERVER = os.environ.get("FP_BENCH_SERVER_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_database():
    """A new database on the benchmark server, dropped afterwards."""
    admin = create_engine(SERVER, isolation_level="AUTOCOMMIT")
    name = f"fp_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield SERVER.rsplit("/", 1)[0] + f"/{name}"
    finally:
        from forecasting_pipeline.resources.database import engine_for

        engine_for.cache_clear()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def configure(url: str, **settings: str) -> Path:
    """Point this process at a new FP_HOME and database, before the package is imported."""
    home = Path(tempfile.mkdtemp(prefix="fp-bench-"))
    home.chmod(0o755)
    os.environ.update(FP_HOME=str(home), FP_DATABASE_URL=url, DAGSTER_HOME=str(home / "dagster"), **settings)
    return home


def hourly_series(
    series: int, hours: int, end: datetime, seed: int = 7, prefix: str = "store"
) -> pl.DataFrame:
    """`series` hourly series of `hours` rows ending at `end` (exclusive), long format, as text."""
    rng = np.random.default_rng(seed)
    start = end - timedelta(hours=hours)
    stamps = pl.datetime_range(start, end - timedelta(hours=1), "1h", eager=True)
    ids = np.repeat([f"{prefix}-{i:05d}" for i in range(series)], hours)
    cycle = np.tile(10 * np.sin(np.arange(hours) * 2 * np.pi / 24), series)
    level = np.cumsum(rng.normal(0, 1, series * hours)).reshape(series, hours)
    level -= level[:, :1]
    values = 100 + cycle + level.ravel()
    return pl.DataFrame(
        {
            "unique_id": ids,
            "ds": pl.concat([stamps] * series).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "y": np.round(values, 3),
            "temperature": np.round(rng.normal(15, 5, series * hours), 2),
        }
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))


def materializations(engine, run_ids: list[str]) -> int:
    """Partitions materialized by these runs (one ASSET_MATERIALIZATION event per asset and key)."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                "AND run_id = ANY(:runs)"
            ),
            {"runs": run_ids},
        ).scalar_one()
