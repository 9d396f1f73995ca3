"""Incrementality: one new week for 1% of 1,000 series, against a full ingest.

A full ingest lands eight weeks of hourly data for 1,000 series (history slice plus three
weekly windows); then ten series (1%) get one new week, twice: ten series spread evenly over
the partition order (worst case: one run each) and ten neighbouring series (one run). Reports
the partitions materialized and the wall time of each increment as ratios of the full ingest.
Writes benchmarks/results/incremental_ingest.json.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

import polars as pl
from _common import configure, fresh_database, hourly_series, materializations, write_result

SERIES = 1_000
WEEKS = 8
CHANGED = 10  # 1% of the series
WEEK_END = datetime(2024, 5, 26)  # a Sunday: the windows are whole weeks


def main() -> None:
    with fresh_database() as url:
        # A live deployment's calendar: open, four weekly windows after the history slice.
        configure(url, FP_PARTITION_START="2024-04-28")
        from dagster import DagsterInstance

        from forecasting_pipeline import operations
        from forecasting_pipeline.bootstrap import prepare_deployment
        from forecasting_pipeline.resources.database import engine_for

        deployment = prepare_deployment()
        landing = deployment.settings.landing_dir
        landing.mkdir(parents=True, exist_ok=True)
        history = hourly_series(SERIES, WEEKS * 168, WEEK_END)
        history.write_csv(landing / "history.csv")
        instance = DagsterInstance.get()
        engine = engine_for(deployment.database_url)

        started = time.perf_counter()
        full = operations.ingest(instance, deployment, progress=lambda _: None)
        full_s = time.perf_counter() - started

        # The same generator one week further: the new week of ten series.
        extended = hourly_series(SERIES, (WEEKS + 1) * 168, datetime(2024, 6, 2))
        new_week = extended.filter(pl.col("ds") >= "2024-05-26")
        increments = {}
        for name, chosen in (
            ("spread", [f"store-{i:05d}" for i in range(0, SERIES, SERIES // CHANGED)]),
            ("neighbours", [f"store-{i:05d}" for i in range(1, 1 + CHANGED)]),
        ):
            new_week.filter(pl.col("unique_id").is_in(chosen)).write_csv(landing / f"week_{name}.csv")
            started = time.perf_counter()
            increment = operations.ingest(instance, deployment, progress=lambda _: None)
            seconds = time.perf_counter() - started
            increments[name] = (increment, seconds)

        full_parts = materializations(engine, full.run_ids)
        results = {}
        for name, (increment, seconds) in increments.items():
            parts = materializations(engine, increment.run_ids)
            results[f"one_week_for_1pct_{name}"] = {
                "rows": sum(f.rows_accepted for f in increment.files),
                "cells": increment.cells,
                "runs": len(increment.run_ids),
                "materializations": parts,
                "wall_s": round(seconds, 1),
                "materializations_ratio": round(parts / full_parts, 4),
                "wall_time_ratio": round(seconds / full_s, 4),
            }
        instance.dispose()
        write_result(
            "incremental_ingest",
            {
                "what": f"{SERIES} hourly series, {WEEKS} weeks full ingest, "
                f"then 1 new week for {CHANGED} series",
                "full_ingest": {
                    "rows": sum(f.rows_accepted for f in full.files),
                    "cells": full.cells,
                    "runs": len(full.run_ids),
                    "materializations": full_parts,
                    "wall_s": round(full_s, 1),
                },
                **results,
                "cpus": os.cpu_count(),
            },
        )


if __name__ == "__main__":
    main()
