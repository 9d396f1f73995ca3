"""Dagster at 10,000 series: registration, one week's ingest, bookkeeping per key, UI status.

Lands one week of hourly data for 10,000 series into a deployment whose calendar holds that
week, and measures: staging and registering the series (domain tables + dynamic partitions),
the `raw_observations` run over all 10,000 cells (its own SQL time is reported by the asset, the
rest is Dagster's bookkeeping), and the query behind the UI's partition status of
`raw_observations`. Writes benchmarks/results/dagster_scale_probe.json.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

from _common import configure, fresh_database, hourly_series, write_result

SERIES = 10_000
WEEK_START = datetime(2024, 5, 26)  # a Sunday
PER_SERIES_ASSETS = 3  # raw_observations, local_models, predictions: series × date assets per cycle
BUDGET_S = 300


def main() -> None:
    with fresh_database() as url:
        configure(url, FP_PARTITION_START=WEEK_START.date().isoformat())
        from dagster import AssetKey, DagsterInstance
        from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

        from forecasting_pipeline import operations
        from forecasting_pipeline.bootstrap import prepare_deployment
        from forecasting_pipeline.partitions import series_date_partitions

        deployment = prepare_deployment()
        landing = deployment.settings.landing_dir
        landing.mkdir(parents=True, exist_ok=True)
        hourly_series(SERIES, 168, datetime(2024, 6, 2)).write_csv(landing / "week.csv")
        instance = DagsterInstance.get()
        marks: dict[str, float] = {}
        started = time.perf_counter()

        def progress(message: str) -> None:
            if "series partitions" in message:
                marks["partitions_added"] = time.perf_counter()
            if "changed series" in message:
                marks["planned"] = time.perf_counter()

        registration_started = time.perf_counter()
        summary = operations.ingest(instance, deployment, progress=progress)
        total = time.perf_counter() - started
        staging_s = marks["partitions_added"] - registration_started
        materialization = instance.fetch_materializations(AssetKey("raw_observations"), limit=1).records[0]
        accept_s = materialization.asset_materialization.metadata["accept_seconds"].value
        run = instance.get_run_record_by_id(summary.run_ids[0])
        # From run creation (when Dagster writes a planned event per key) to the run's end.
        run_s = (run.end_time or 0) - run.create_timestamp.timestamp()
        status_started = time.perf_counter()
        get_and_update_asset_status_cache_value(
            instance, AssetKey("raw_observations"), series_date_partitions
        )
        status_first_s = time.perf_counter() - status_started
        status_started = time.perf_counter()
        get_and_update_asset_status_cache_value(
            instance, AssetKey("raw_observations"), series_date_partitions
        )
        status_cached_s = time.perf_counter() - status_started
        bookkeeping_per_key = (run_s - accept_s) / SERIES
        cycle_s = bookkeeping_per_key * SERIES * PER_SERIES_ASSETS
        instance.dispose()
        write_result(
            "dagster_scale_probe",
            {
                "what": f"{SERIES:,} hourly series, one week (168 rows each) in one window",
                "rows": sum(f.rows_accepted for f in summary.files),
                "register_and_stage_s (files, series table, partition keys)": round(staging_s, 1),
                "ingest_runs_s (raw_observations + observation_history)": round(
                    started + total - marks["planned"], 1
                ),
                "raw_observations_run_s": round(run_s, 1),
                "of_which_accept_sql_s": accept_s,
                "bookkeeping_s_per_key": round(bookkeeping_per_key, 4),
                "ui_partition_status_query_s": {
                    "first": round(status_first_s, 2),
                    "cached": round(status_cached_s, 2),
                },
                "weekly_cycle_bookkeeping_estimate_s": round(cycle_s),
                "per_series_assets": PER_SERIES_ASSETS,
                "within_5_minutes": cycle_s <= BUDGET_S,
                "total_ingest_s": round(total, 1),
                "cpus": os.cpu_count(),
            },
        )


if __name__ == "__main__":
    main()
