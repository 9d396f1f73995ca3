"""Asset backfills as the unit of automated work: built from partition keys, submitted once.

A backfill runs its assets in dependency order and, with the assets' single-run backfill
policies, as one run per partitions definition and level (per window for series × date
assets), never one run per key. Sensors record what they decide in
`forecasting.automation_requests` first and use the request id as the backfill id: a tick finds
a decided request without its backfill (the daemon stopped in between) and submits it then, and
a request whose backfill exists is never submitted again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import polars as pl
from dagster import AssetKey, DagsterInstance
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.execution.backfill import PartitionBackfill
from sqlalchemy import Connection

from forecasting_pipeline.automation.tags import REASON_TAG, REQUEST_TAG, TRIGGER_TAG
from forecasting_pipeline.partitions import date_partitions, series_date_partitions, series_date_range
from forecasting_pipeline.storage.automation import AutomationRequest, mark_submitted, open_requests

# Dagster shows tag values in full; a reason is cut to what a person reads at a glance.
_MAX_TAG = 1_000

WINDOW_ASSETS_TRAINING = ("training_panel", "hyperparameter_search", "global_models", "local_models")
CELL_ASSETS_PUBLISHING = ("backtest_folds", "model_selection", "predictions")


def window_subset(assets: Sequence[str], windows: Sequence[str]) -> dict[AssetKey, Any]:
    """`date` partitions of window-level assets."""
    subset = date_partitions.subset_with_partition_keys(sorted(set(windows)))
    return {AssetKey(name): subset for name in assets} if windows else {}


def cell_subset(assets: Sequence[str], cells: pl.DataFrame) -> dict[AssetKey, Any]:
    """series × date partitions of per-series assets, from cells (partition_key, window_key).

    Keys are written in Dagster's multi-partition form (`date|series`, the dimensions sorted
    by name) by one polars expression, not built one object per cell.
    """
    if cells.height == 0:
        return {}
    keys = (
        cells.select(pl.concat_str([pl.col("window_key"), pl.col("partition_key")], separator="|"))
        .unique()
        .to_series()
        .sort()
        .to_list()
    )
    subset = series_date_partitions.empty_subset().with_partition_keys(keys)
    return {AssetKey(name): subset for name in assets}


def every_series(series_keys: Sequence[str], windows: Sequence[str]) -> pl.DataFrame:
    """The cells of every series in each of `windows`."""
    return pl.DataFrame({"partition_key": list(series_keys)}, schema={"partition_key": pl.Utf8}).join(
        pl.DataFrame({"window_key": list(windows)}, schema={"window_key": pl.Utf8}), how="cross"
    )


def graph_subset(*parts: Mapping[AssetKey, Any]) -> AssetGraphSubset:
    merged: dict[AssetKey, Any] = {}
    for part in parts:
        merged.update(part)
    return AssetGraphSubset(partitions_subsets_by_asset_key=merged, non_partitioned_asset_keys=set())


def submit_backfill(
    instance: DagsterInstance, request: AutomationRequest, subset: AssetGraphSubset, trigger: str
) -> None:
    instance.add_backfill(
        PartitionBackfill.from_asset_graph_subset(
            backfill_id=request.request_id,
            backfill_timestamp=time.time(),
            tags={
                TRIGGER_TAG: trigger,
                REASON_TAG: request.reason[:_MAX_TAG],
                REQUEST_TAG: request.request_id,
            },
            dynamic_partitions_store=instance,
            asset_graph_subset=subset,
            title=f"{trigger}: {request.reason}"[:100],
            description=request.reason,
            run_config=None,
        )
    )


def submit_open_requests(
    instance: DagsterInstance,
    conn: Connection,
    kind: str,
    trigger: str,
    build: Callable[[AutomationRequest], AssetGraphSubset | None],
) -> list[str]:
    """Submit every decided request of `kind` that has no backfill yet; return their ids.

    `build` turns a request back into its partitions (from what the request stored), so a
    request decided by a tick that died is submitted exactly as decided.
    """
    submitted = []
    for request in open_requests(conn, kind):
        if instance.get_backfill(request.request_id) is None:
            subset = build(request)
            if subset is None or subset.is_empty:
                mark_submitted(conn, request.request_id)
                continue
            submit_backfill(instance, request, subset, trigger)
            submitted.append(request.request_id)
        mark_submitted(conn, request.request_id)
    return submitted


# Jobs in dependency order; a backfill of windows runs each job that holds requested assets once.
BACKFILL_ORDER = (
    "version_observation_history",
    "study_correlations",
    "study_series",
    "train_models",
    "publish_forecasts",
    "measure_feature_effects",
    "score_forecast_accuracy",
)


def backfill_plan(assets: Sequence[str], first: str, last: str, series_keys: Sequence[str]):
    """(job name, assets, first key, last key) per run of a window-range backfill over all series.

    Series × date assets run as one rectangle first..last window × every series; window-level
    assets as one range of windows, except the history versions (one run per window, its
    data version). As few runs as the partition definitions allow.
    """
    from forecasting_pipeline.automation.jobs import JOBS
    from forecasting_pipeline.definitions import defs

    windows = [w for w in date_partitions.get_partition_keys() if first <= w <= last]
    if not windows:
        raise ValueError(f"no date window between {first} and {last}")
    graph = defs.resolve_asset_graph()
    jobs = {job.name: job for job in JOBS}
    wanted = set(assets)
    plan = []
    for job_name in BACKFILL_ORDER:
        job = jobs[job_name]
        selected = sorted(wanted & {key.to_user_string() for key in job.selection.resolve(graph)})
        if not selected:
            continue
        if job.partitions_def == series_date_partitions:
            if not series_keys:
                continue
            start, _ = series_date_range(windows[0], list(series_keys))
            _, end = series_date_range(windows[-1], list(series_keys))
            plan.append((job_name, selected, start, end))
        elif job_name == "version_observation_history":
            plan.extend((job_name, selected, w, w) for w in windows)
        else:
            plan.append((job_name, selected, windows[0], windows[-1]))
        wanted -= set(selected)
    if wanted:
        raise ValueError(f"cannot backfill {sorted(wanted)} by window (ingest lands files instead)")
    return plan


def window_range_subset(assets: Sequence[str], first: str, last: str, series_keys: Sequence[str]):
    """The same backfill as an asset graph subset, for the daemon (what the UI submits)."""
    from forecasting_pipeline.definitions import defs

    windows = [w for w in date_partitions.get_partition_keys() if first <= w <= last]
    graph = defs.resolve_asset_graph()
    cell_assets = [a for a in assets if graph.get(AssetKey(a)).partitions_def == series_date_partitions]
    window_assets = [a for a in assets if a not in cell_assets]
    return graph_subset(
        window_subset(window_assets, windows),
        cell_subset(cell_assets, every_series(series_keys, windows)),
    )
