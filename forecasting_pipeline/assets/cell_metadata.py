"""Per-partition metadata of series × date runs: each cell's own counts on its own page.

A run over many cells emits one materialization per partition key; without this, every key
would show the run's totals. Dagster's public `context.add_asset_metadata(partition_key=…)`
re-derives the run's whole key range and copies its accumulator on every call (about 45 ms a
key at 10,000 series), so the metadata of all cells is attached in one merge instead, through
the same accumulator that call writes; the public call is the fallback if that ever moves.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from dagster import AssetExecutionContext, MetadataValue
from sqlalchemy import Connection

from forecasting_pipeline.series_keys import partition_keys
from forecasting_pipeline.storage.cell_counts import rows_per_cell

WINDOW = "window"
SERIES_ID = "series_id"
PARTITION_KEY = "partition_key"


def run_cells(context: AssetExecutionContext) -> pl.DataFrame:
    """`partition_key, window, series_key` of the run's series × date keys ("<window>|<series key>")."""
    keys = pl.Series(PARTITION_KEY, [str(key) for key in context.partition_keys], dtype=pl.String)
    parts = pl.col(PARTITION_KEY).str.split_exact("|", 1)
    return keys.to_frame().with_columns(
        parts.struct.field("field_0").alias(WINDOW), parts.struct.field("field_1").alias("series_key")
    )


def cell_metadata(
    context: AssetExecutionContext, cells: pl.DataFrame, markdown: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """Partition key -> metadata, for every cell of the run.

    `cells` holds `window`, `series_id` and one column per metadata entry (at most one row per
    cell); `markdown` columns hold Markdown (tables, inline images) the UI renders. Cells of the
    run missing from it get zero counts; null text is left out.
    """
    keyed = cells.with_columns(
        pl.concat_str([pl.col(WINDOW), pl.lit("|"), partition_keys(cells[SERIES_ID])]).alias(PARTITION_KEY)
    ).drop(WINDOW, SERIES_ID)
    frame = run_cells(context).select(PARTITION_KEY).join(keyed, on=PARTITION_KEY, how="left")
    frame = frame.with_columns(pl.selectors.numeric().fill_null(0))
    names = [c for c in frame.columns if c != PARTITION_KEY]
    # One dict per key: Dagster's metadata is per key (each key gets its own event anyway).
    return {
        key: {
            name: MetadataValue.md(value) if name in markdown else value
            for name, value in zip(names, values, strict=True)
            if value is not None
        }
        for key, *values in zip(
            frame[PARTITION_KEY].to_list(), *(frame[n].to_list() for n in names), strict=True
        )
    }


def attach_cell_metadata(context: AssetExecutionContext, by_key: dict[str, dict[str, Any]]) -> None:
    """Give each partition key of the run its own metadata, in one merge (see the module doc).

    `by_key` holds only the run's keys: `cell_metadata` builds it from them.
    """
    step = getattr(context, "_step_execution_context", None)
    accumulator = getattr(step, "_metadata_accumulator", None)
    try:
        from dagster._core.execution.context.metadata_logging import (
            AssetMetadataHandle,
            OutputMetadataAccumulator,
        )
    except ImportError:
        accumulator = None
    if accumulator is None or not hasattr(accumulator, "per_output_metadata"):
        for key, metadata in by_key.items():
            context.add_asset_metadata(metadata, partition_key=key)
        return
    merged = dict(accumulator.per_output_metadata)
    for key, metadata in by_key.items():
        handle = AssetMetadataHandle(asset_key=context.asset_key, partition_key=key)
        merged[handle] = {**merged.get(handle, {}), **metadata}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)


def add_cell_metadata(
    context: AssetExecutionContext, cells: pl.DataFrame, markdown: tuple[str, ...] = ()
) -> None:
    """`cell_metadata` attached to the run's keys: what each series × window page shows."""
    attach_cell_metadata(context, cell_metadata(context, cells, markdown))


def add_cell_rows(
    context: AssetExecutionContext,
    conn: Connection,
    table: str,
    by_window: dict[str, list[str]],
    name: str,
    extra: pl.DataFrame | None = None,
    markdown: tuple[str, ...] = (),
) -> None:
    """Each cell's rows of `table` as metadata entry `name`, with `extra` per-cell columns beside it."""
    series_ids = sorted({series_id for ids in by_window.values() for series_id in ids})
    cells = rows_per_cell(conn, table, list(by_window), series_ids).rename({"rows": name})
    if extra is not None and extra.height:
        cells = cells.join(extra, on=[WINDOW, SERIES_ID], how="full", coalesce=True)
    add_cell_metadata(context, cells, markdown)
