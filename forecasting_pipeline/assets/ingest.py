"""Ingest stage: accept staged observations per series × window, and version each window's history.

`raw_observations` does not read landed files: the front door (`ingestion/staging.py`) parsed
and validated each file once and staged its rows. A run accepts the staged rows of its cells in
one set-based transaction and reports, as asset checks, how the batch looked as landed.
`observation_history` folds every cell up to a window into one data version, so a restated
value in an old window marks every later window's panel, models and forecasts stale.
"""

import time
from collections.abc import Iterator

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    DataVersion,
    MaterializeResult,
    MetadataValue,
)

from forecasting_pipeline.assets.cell_metadata import add_cell_rows
from forecasting_pipeline.assets.conventions import markdown_table, note_run, pipeline_asset
from forecasting_pipeline.checks.landed_quality import CHECK_NAMES
from forecasting_pipeline.partitions import (
    SAME_WINDOW,
    date_partitions,
    parse_series_date_key,
    series_date_partitions,
    window_bounds,
)
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.storage.catalog import series_by_partition_key
from forecasting_pipeline.storage.observations import (
    Cell,
    accept_staged_cells,
    history_versions,
    quality_results_for_files,
    staged_file_ids,
)
from forecasting_pipeline.storage.tables import CELL_VERSIONS

# Checks that warn instead of stopping downstream work.
_WARNING_CHECKS = frozenset({"no_gaps"})
_CHECK_DESCRIPTIONS = {
    "required_columns": "Every landed file has the series id, timestamp and target columns.",
    "series_ids_present": "Landed rows carry a series id.",
    "timestamps_parse": "Landed timestamps parse as ISO 8601.",
    "finite_targets": "Landed targets are present, numeric and finite.",
    "no_conflicting_duplicates": "No timestamp of a series lands twice with different values.",
    "on_series_grid": "Timestamps lie on their series' sampling grid.",
    "no_gaps": "Series have no missing steps (a warning).",
    "within_bounds": "Targets lie within the configured bounds (FP_TARGET_MIN / FP_TARGET_MAX).",
}
RAW_OBSERVATION_CHECKS = [
    AssetCheckSpec(
        name,
        asset="raw_observations",
        blocking=name not in _WARNING_CHECKS,
        description=_CHECK_DESCRIPTIONS[name],
    )
    for name in CHECK_NAMES
]


def _check_results(results: list[dict]) -> Iterator[AssetCheckResult]:
    """One result per check over the landed batches feeding this run (all must pass)."""
    by_name: dict[str, list[dict]] = {}
    for row in results:
        by_name.setdefault(row["check_name"], []).append(row)
    for name in CHECK_NAMES:
        rows = by_name.get(name, [])
        evaluated = sum(r["evaluated"] for r in rows)
        unexpected = sum(r["unexpected"] for r in rows)
        metadata = {
            "batches": len({r["batch_id"] for r in rows}),
            "rows_evaluated": evaluated,
            "rows_unexpected": unexpected,
            "unexpected_fraction": unexpected / evaluated if evaluated else 0.0,
        }
        if rows:
            metadata["expectation"] = rows[0]["expectation"]
            metadata["details"] = rows[-1]["details"]
        else:
            metadata["note"] = "no newly landed rows in these cells (or no bounds configured)"
        yield AssetCheckResult(
            check_name=name,
            asset_key="raw_observations",
            passed=all(r["success"] for r in rows),
            severity=AssetCheckSeverity.WARN if name in _WARNING_CHECKS else AssetCheckSeverity.ERROR,
            metadata=metadata,
        )


CHANGE_COUNTS = ("rows_inserted", "rows_restated")


def _markdown_table(headers: list[str], rows: list[tuple]) -> MetadataValue:
    """Rows of a few values as the shared, escaped metadata table (`conventions.markdown_table`)."""
    return MetadataValue.md(markdown_table(pl.DataFrame(rows, schema=headers, orient="row")))


@pipeline_asset(
    partitions_def=series_date_partitions,
    group_name="ingest",
    kinds={"postgres"},
    check_specs=RAW_OBSERVATION_CHECKS,
)
def raw_observations(context: AssetExecutionContext, database: DatabaseResource) -> Iterator:
    """Observations of one series in one window, in `forecasting.observations`.

    One run accepts any rectangle of cells: new rows are inserted, restated ones replaced (the
    old value kept in `forecasting.observation_revisions`), unchanged ones left alone. A batch
    that failed a blocking quality check as landed is held: its check fails here and the run
    stops before anything downstream.
    """
    started = time.perf_counter()
    cells = [parse_series_date_key(key) for key in context.partition_keys]
    with database.transaction() as conn:
        note_run(context, conn)
        ids = series_by_partition_key(conn, sorted({cell.series_key for cell in cells}))
        unknown = sorted({cell.series_key for cell in cells} - set(ids))
        if unknown:
            raise ValueError(f"partition keys with no registered series: {unknown[:5]}; run `ingest` first")
        spans = []
        for cell in cells:
            bounds = window_bounds(cell.window)
            spans.append(Cell(ids[cell.series_key], cell.window, bounds.start, bounds.end))
        quality = quality_results_for_files(conn, staged_file_ids(conn, spans))
        accepted = accept_staged_cells(conn, spans, context.run_id)
        changes = pl.DataFrame(
            {
                "window": [r.window_key for r in accepted],
                "series_id": [r.series_id for r in accepted],
                CHANGE_COUNTS[0]: [r.inserted for r in accepted],
                CHANGE_COUNTS[1]: [r.restated for r in accepted],
            },
            schema={
                "window": pl.String,
                "series_id": pl.String,
                "rows_inserted": pl.Int64,
                "rows_restated": pl.Int64,
            },
        )
        by_window: dict[str, list[str]] = {}
        for span in spans:
            by_window.setdefault(span.window_key, []).append(span.series_id)
        add_cell_rows(context, conn, CELL_VERSIONS, by_window, "observations", changes)

    inserted = sum(r.inserted for r in accepted)
    restated = sum(r.restated for r in accepted)
    context.log.info(f"{len(cells)} partitions: {inserted} new observations, {restated} restated")
    # Each cell's page shows its own counts (add_cell_rows); these are the run's totals.
    derived = [(key, series_id) for key, series_id in sorted(ids.items()) if key != series_id][:100]
    changed = sorted(
        (r for r in accepted if r.inserted or r.restated), key=lambda r: -(r.inserted + r.restated)
    )
    yield MaterializeResult(
        metadata={
            "cells": len(cells),
            "accept_seconds": round(time.perf_counter() - started, 2),
            "rows_inserted": inserted,
            "rows_restated": restated,
            "cells_changed": len(changed),
            # Derived partition keys next to the ids users know (plain ids are their own key).
            "series_ids": _markdown_table(["partition key", "series id"], derived)
            if derived
            else "every series id is its own partition key",
            "largest_changes": _markdown_table(
                ["series", "window", "inserted", "restated"],
                [(r.series_id, r.window_key, r.inserted, r.restated) for r in changed[:20]],
            ),
        }
    )
    yield from _check_results(quality)


@pipeline_asset(
    partitions_def=date_partitions,
    deps=[AssetDep(raw_observations, partition_mapping=SAME_WINDOW)],
    group_name="ingest",
    kinds={"postgres"},
    # One window per run: each window gets its own data version.
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def observation_history(context: AssetExecutionContext, database: DatabaseResource) -> MaterializeResult:
    """Every series' observations up to the end of the window, as one versioned snapshot.

    Its data version folds the content fingerprint of every cell up to the window, so a changed
    value in any earlier window gives this window — and through it the panels, models and
    forecasts built on it — a new version; unchanged data keeps the version and nothing is stale.
    """
    window = context.partition_key
    with database.transaction() as conn:
        (version,) = history_versions(conn, [window])
    context.log.info(f"window {window}: {version.series} series, {version.rows} observations")
    return MaterializeResult(
        data_version=DataVersion(version.version),
        metadata={"series": version.series, "observations": version.rows, "history_version": version.version},
    )
