"""Dagster at 10,000 series × 52 weekly windows: the costs that grow with the partition grid.

Lands a year of daily data for N series (52 weekly windows, 520,000 series × date cells at
10,000 series), ingests it (one `raw_observations` run over every cell, then the history
versions), and measures on the resulting deployment:

* definitions load: a fresh interpreter importing `forecasting_pipeline.definitions` and
  resolving the asset graph (median of 3);
* sensor ticks, evaluated as the daemon does: `new_data_sensor` with nothing new and the
  cascade sensor with nothing queued;
* backfill launch: submitting an asset backfill of `feature_table` over every cell (what the
  UI's "Materialize" over all partitions submits), then a real `dagster-daemon` until the
  backfill's first run exists (the backfill is then cancelled);
* the asset page's partition status (`partitionStats` and `assetPartitionStatuses` of
  `raw_observations`) through a real `dagster-webserver`'s GraphQL API, first and repeated;
* the event log's size in PostgreSQL.

Usage: python benchmarks/partition_scale.py --series 10000 [--weeks 52]
Writes benchmarks/results/partition_scale.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.error
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from _common import configure, fresh_database, peak_rss_mb, write_result
from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LAST_SUNDAY = datetime(2024, 6, 2)
STATUS_QUERY = """
query Status($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
      assetPartitionStatuses {
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey
            secondaryDim { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } }
          }
        }
      }
    }
  }
}
"""
LOAD_DEFINITIONS = (
    "import time; t = time.perf_counter(); from forecasting_pipeline.definitions import defs; "
    "defs.resolve_asset_graph(); print(time.perf_counter() - t)"
)


def daily_series(series: int, days: int, end: datetime, seed: int = 11) -> pl.DataFrame:
    """`series` daily random walks of `days` rows ending the day before `end`, as text."""
    rng = np.random.default_rng(seed)
    stamps = pl.date_range(end - timedelta(days=days), end - timedelta(days=1), "1d", eager=True)
    values = 100 + np.cumsum(rng.normal(0, 1, (series, days)), axis=1)
    return pl.DataFrame(
        {
            "unique_id": np.repeat([f"sku-{i:05d}" for i in range(series)], days),
            "ds": pl.concat([stamps] * series).dt.strftime("%Y-%m-%d"),
            "y": np.round(values.ravel(), 2),
        }
    )


def timed(call) -> tuple[object, float]:
    started = time.perf_counter()
    value = call()
    return value, round(time.perf_counter() - started, 3)


def partition_status_timings(port: int) -> dict[str, object]:
    """The asset page's partition-status query, first and repeated; a failure is recorded as such."""
    from forecasting_pipeline_tests import dagster_processes

    variables = {"key": {"path": ["raw_observations"]}}
    try:
        first, first_s = timed(lambda: dagster_processes.graphql(port, STATUS_QUERY, variables))
        repeated = [
            timed(lambda: dagster_processes.graphql(port, STATUS_QUERY, variables))[1] for _ in range(3)
        ]
    except urllib.error.HTTPError as exc:
        return {"error": f"HTTP {exc.code}", "body": exc.read().decode(errors="replace")[:3000]}
    stats = first["assetNodeOrError"]["partitionStats"]
    return {"first": first_s, "repeated": repeated, "partitionStats": stats}


def cancel_backfills(instance) -> None:
    """Stop every backfill: the benchmark measures launching, not running them."""
    from dagster._core.execution.backfill import BulkActionStatus

    for backfill in instance.get_backfills():
        if backfill.status == BulkActionStatus.REQUESTED:
            instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELING))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--weeks", type=int, default=52)
    args = parser.parse_args()
    first_window = LAST_SUNDAY - timedelta(weeks=args.weeks - 1)
    with fresh_database() as url:
        configure(url, FP_PARTITION_START=first_window.date().isoformat(), FP_PARTITION_END="2024-06-09")
        from dagster import AssetKey, DagsterInstance, SensorResult, build_sensor_context

        from forecasting_pipeline import operations
        from forecasting_pipeline.automation.cascade import retraining_cascade_sensor
        from forecasting_pipeline.automation.new_data import new_data_sensor
        from forecasting_pipeline.bootstrap import prepare_deployment
        from forecasting_pipeline.dagster_services import UI_STATEMENT_TIMEOUT_MS
        from forecasting_pipeline.definitions import defs
        from forecasting_pipeline.resources.database import DatabaseResource, engine_for
        from forecasting_pipeline_tests import dagster_processes

        deployment = prepare_deployment()
        landing = deployment.settings.landing_dir
        landing.mkdir(parents=True, exist_ok=True)
        frame = daily_series(args.series, args.weeks * 7, LAST_SUNDAY + timedelta(days=7))
        frame.write_csv(landing / "year.csv")
        instance = DagsterInstance.get()
        engine = engine_for(deployment.database_url)
        result: dict[str, object] = {
            "what": f"{args.series:,} daily series × {args.weeks} weekly windows "
            f"({args.series * args.weeks:,} series × date cells, {frame.height:,} rows)",
            "date": datetime.now().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
        }

        summary, ingest_s = timed(lambda: operations.ingest(instance, deployment, progress=lambda _: None))
        cells = instance.get_run_by_id(summary.run_ids[0])
        result["ingest"] = {
            "wall_s": ingest_s,
            "runs": len(summary.run_ids),
            "raw_observations_run_s": round(
                instance.get_run_record_by_id(cells.run_id).end_time
                - instance.get_run_record_by_id(cells.run_id).create_timestamp.timestamp(),
                1,
            ),
            "peak_rss_mb": round(peak_rss_mb()),
        }

        env = {**os.environ, "PYTHONPATH": str(REPO)}
        loads = [
            float(
                subprocess.run(
                    [sys.executable, "-c", LOAD_DEFINITIONS],
                    env=env,
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
            )
            for _ in range(3)
        ]
        result["definitions_load_s"] = {"median": round(statistics.median(loads), 2), "runs": loads}

        resources = {"database": DatabaseResource(url=deployment.database_url)}

        def tick(sensor, name: str, quiet: bool = True) -> float:
            context = build_sensor_context(
                instance=instance, sensor_name=name, resources=resources, definitions=defs
            )
            outcome, seconds = timed(lambda: sensor(context))
            if quiet:
                assert not isinstance(outcome, SensorResult) or not outcome.run_requests, "nothing is new"
            return seconds

        # The ingest queued every changed cell for the cascade: its first tick claims them all.
        cascade_claim_s = tick(retraining_cascade_sensor, "retraining_cascade_sensor", quiet=False)
        cancel_backfills(instance)
        result["sensor_tick_s"] = {
            "retraining_cascade_sensor claiming every ingested cell": cascade_claim_s,
            "new_data_sensor (nothing new)": [tick(new_data_sensor, "new_data_sensor") for _ in range(3)],
            "retraining_cascade_sensor (nothing queued)": [
                tick(retraining_cascade_sensor, "retraining_cascade_sensor") for _ in range(3)
            ],
        }

        windows = [
            key
            for key in defs.resolve_asset_graph()
            .get(AssetKey("feature_table"))
            .partitions_def.get_partitions_def_for_dimension("date")
            .get_partition_keys()
        ]
        submitted, submit_s = timed(
            lambda: operations.backfill(
                instance, windows[0], windows[-1], ["feature_table"], submit=True, progress=lambda _: None
            )
        )
        port = dagster_processes.free_port()
        workspace = ["-w", str(REPO / "workspace.yaml")]
        bin_dir = Path(sys.executable).parent
        log = (Path(os.environ["FP_HOME"]) / "services.log").open("w")
        daemon_started = time.perf_counter()
        daemon = dagster_processes.start([str(bin_dir / "dagster-daemon"), "run", *workspace], env, log)
        try:
            first_run_s = None
            while time.perf_counter() - daemon_started < 900:
                with engine.connect() as conn:
                    launched = conn.execute(
                        text("SELECT count(*) FROM run_tags WHERE key = 'dagster/backfill' AND value = :id"),
                        {"id": submitted.backfill_id},
                    ).scalar_one()
                if launched:
                    first_run_s = round(time.perf_counter() - daemon_started, 1)
                    break
                time.sleep(1)
            cancel_backfills(instance)
        finally:
            dagster_processes.stop(daemon)  # its runs would share the cores with the UI query below
        result["backfill"] = {
            "cells": args.series * len(windows),
            "submit_s": submit_s,
            "daemon_start_to_first_run_s": first_run_s,
        }
        write_result("partition_scale", result)  # what is measured so far, should the UI part fail

        webserver = dagster_processes.start(
            [
                *[str(bin_dir / "dagster-webserver"), *workspace, "-h", "127.0.0.1", "-p", str(port)],
                *["--db-statement-timeout", str(UI_STATEMENT_TIMEOUT_MS)],
            ],
            env,
            log,
        )
        try:
            dagster_processes.wait_for_assets(port, webserver)
            result["ui_partition_status_query_s"] = partition_status_timings(port)
        finally:
            dagster_processes.stop(webserver)
            log.close()

        with engine.connect() as conn:
            result["event_log"] = {
                "rows": conn.execute(text("SELECT count(*) FROM event_logs")).scalar_one(),
                "bytes": conn.execute(text("SELECT pg_total_relation_size('event_logs')")).scalar_one(),
                "database_bytes": conn.execute(
                    text("SELECT pg_database_size(current_database())")
                ).scalar_one(),
            }
        instance.dispose()
        write_result("partition_scale", result)


if __name__ == "__main__":
    main()
