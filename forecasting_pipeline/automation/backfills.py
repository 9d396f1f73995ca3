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

from dagster import AssetKey, DagsterInstance
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.execution.backfill import PartitionBackfill
from sqlalchemy import Connection

from forecasting_pipeline.partitions import (
    date_partitions,
    series_date_partitions,
    series_window,
)
from forecasting_pipeline.storage.automation import AutomationRequest, mark_submitted, open_requests

TRIGGER_TAG = "forecasting-pipeline/trigger"
REASON_TAG = "forecasting-pipeline/reason"
REQUEST_TAG = "forecasting-pipeline/request"
# Dagster shows tag values in full; a reason is cut to what a person reads at a glance.
_MAX_TAG = 1_000

WINDOW_ASSETS_TRAINING = ("training_panel", "hyperparameter_search", "global_models", "local_models")
CELL_ASSETS_PUBLISHING = ("backtest_folds", "model_selection", "predictions")


def window_subset(assets: Sequence[str], windows: Sequence[str]) -> dict[AssetKey, Any]:
    """`date` partitions of window-level assets."""
    subset = date_partitions.subset_with_partition_keys(sorted(set(windows)))
    return {AssetKey(name): subset for name in assets} if windows else {}


def cell_subset(assets: Sequence[str], cells: Sequence[tuple[str, str]]) -> dict[AssetKey, Any]:
    """series × date partitions of per-series assets, from (partition_key, window) pairs."""
    if not cells:
        return {}
    keys = sorted({str(series_window(series_key, window).key) for series_key, window in cells})
    subset = series_date_partitions.empty_subset().with_partition_keys(keys)
    return {AssetKey(name): subset for name in assets}


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
            title=f"{trigger}: {request.reason}"[:200],
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
