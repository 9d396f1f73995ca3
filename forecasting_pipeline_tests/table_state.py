"""What the fault tests compare before and after a fault: rows per domain table, duplicate keys.

Counting every table of schema `forecasting` (not a chosen few) is the point: a fault that
leaves a stray row anywhere shows up as a count nobody expected.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Engine, MetaData, func, select

from forecasting_pipeline.storage.tables import SCHEMA

# Keys no constraint enforces but a correct pipeline never repeats: one version per family,
# group, window and run; one cost record per stage, family, group, window and run; one
# champion event of a kind per series, window and model; one audit row per restated value and
# run; one manifest row per landed file and content.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "models": ("model_name", "freq_group", "window_key", "dagster_run_id"),
    "resource_stats": ("dagster_run_id", "stage", "model_name", "freq_group", "window_key"),
    "champion_events": ("series_id", "window_key", "event", "model_name"),
    "observation_revisions": ("series_id", "ts", "dagster_run_id"),
    "landed_files": ("path", "content_hash"),
    "staged_observations": ("file_id", "line"),
}


def _tables(engine: Engine) -> MetaData:
    metadata = MetaData(schema=SCHEMA)
    metadata.reflect(bind=engine, views=False)
    return metadata


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows of every table in schema `forecasting`, by table name."""
    metadata = _tables(engine)
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in metadata.sorted_tables
        }


def count_changes(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Tables whose row count changed, with the change; tables that appeared count from zero."""
    names = set(before) | set(after)
    changes = {name: after.get(name, 0) - before.get(name, 0) for name in names}
    return {name: change for name, change in sorted(changes.items()) if change}


def duplicate_keys(engine: Engine) -> dict[str, int]:
    """For each table of NATURAL_KEYS, how many key values occur more than once (empty: none)."""
    metadata = _tables(engine)
    found: dict[str, int] = {}
    with engine.connect() as conn:
        for name, key in NATURAL_KEYS.items():
            table = metadata.tables[f"{SCHEMA}.{name}"]
            repeated = (
                select(*(table.c[column] for column in key))
                .group_by(*(table.c[column] for column in key))
                .having(func.count() > 1)
                .subquery()
            )
            count = conn.execute(select(func.count()).select_from(repeated)).scalar_one()
            if count:
                found[name] = count
    return found


def rows_naming_run(engine: Engine, run_id: str) -> dict[str, int]:
    """Rows that name `run_id` (column `dagster_run_id`), per table that holds any."""
    metadata = _tables(engine)
    found: dict[str, int] = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if "dagster_run_id" not in table.c:
                continue
            count = conn.execute(
                select(func.count()).select_from(table).where(table.c.dagster_run_id == run_id)
            ).scalar_one()
            if count:
                found[table.name] = count
    return found
