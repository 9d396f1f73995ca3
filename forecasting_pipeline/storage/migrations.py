"""Apply the ordered DDL files in `sql/` exactly once each.

Why not Alembic: Dagster, Optuna and MLflow each own an `alembic_version` table already; plain
numbered SQL files with a ledger in our own schema keep the DDL readable by DBAs and avoid any
clash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from forecasting_pipeline.storage.tables import SCHEMA

_MIGRATION_FILE = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")
# Arbitrary constant: serializes concurrent `db upgrade` calls (code server + CLI at once).
_ADVISORY_LOCK_ID = 7_341_202_611


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path


def discover_migrations(sql_dir: Path) -> list[Migration]:
    """Migration files in version order; refuses stray or duplicate-numbered files."""
    if not sql_dir.is_dir():
        raise FileNotFoundError(f"migrations folder {sql_dir} does not exist")
    migrations: list[Migration] = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise ValueError(f"{path.name}: migration files are named NNN_snake_case.sql")
        migrations.append(Migration(version=path.stem, path=path))
    numbers = [m.version.split("_", 1)[0] for m in migrations]
    if len(numbers) != len(set(numbers)):
        raise ValueError(f"two migrations in {sql_dir} share a number")
    return migrations


def apply_migrations(engine: Engine, sql_dir: Path) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the versions applied."""
    applied_now: list[str] = []
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:lock_id)"), {"lock_id": _ADVISORY_LOCK_ID})
        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = set(conn.execute(text(f"SELECT version FROM {SCHEMA}.schema_migrations")).scalars())
        for migration in discover_migrations(sql_dir):
            if migration.version in done:
                continue
            with conn.begin_nested():
                conn.exec_driver_sql(migration.path.read_text())
                conn.execute(
                    text(f"INSERT INTO {SCHEMA}.schema_migrations (version) VALUES (:version)"),
                    {"version": migration.version},
                )
            applied_now.append(migration.version)
    return applied_now
