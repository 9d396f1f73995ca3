"""`new_data_sensor` ticks over a landing folder of 10,000 files and a deployment of 10,000 series.

Lands one file per series (one week of hourly data each, 10,000 files, 1.68 M rows), then
evaluates the sensor as the daemon does (`build_sensor_context` on the PostgreSQL instance) and
measures: the ticks that stage the backlog (each stops after its 6 s staging budget); the ingest run the
last of them requests, executed in-process; a steady tick over the 10,000 settled files and
series (nothing new: the case every 30 s); the cascade sensor's tick that claims the 10,000
changed cells and submits their backfill; and a tick after 10 files were replaced by
corrected versions. Writes benchmarks/results/sensor_tick.json.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import datetime

from _common import configure, fresh_database, hourly_series, peak_rss_mb, write_result

SERIES = 10_000
HOURS = 168
WEEK_END = datetime(2024, 6, 2)
WEEK_START = datetime(2024, 5, 26)  # a Sunday
MAX_FILES_PER_TICK = 1_000  # the tick's 6 s staging budget ends it sooner
STEADY_TICKS = 5


def main() -> None:
    with fresh_database() as url:
        configure(
            url,
            FP_PARTITION_START=WEEK_START.date().isoformat(),
            FP_SENSOR_MAX_FILES=str(MAX_FILES_PER_TICK),
        )
        from dagster import DagsterInstance, SensorResult, build_sensor_context

        from forecasting_pipeline.automation.cascade import retraining_cascade_sensor
        from forecasting_pipeline.automation.new_data import new_data_sensor, scan_landing
        from forecasting_pipeline.bootstrap import prepare_deployment
        from forecasting_pipeline.definitions import defs
        from forecasting_pipeline.resources.database import DatabaseResource, engine_for
        from forecasting_pipeline.storage.automation import unseen_paths

        deployment = prepare_deployment()
        landing = deployment.settings.landing_dir
        landing.mkdir(parents=True, exist_ok=True)
        frame = hourly_series(SERIES, HOURS, WEEK_END)
        started = time.perf_counter()
        for (series_id,), rows in frame.group_by(["unique_id"]):
            rows.write_csv(landing / f"{series_id}.csv")
        write_seconds = time.perf_counter() - started
        instance = DagsterInstance.get()
        resources = {"database": DatabaseResource(url=deployment.database_url)}

        def tick(sensor, name: str):
            context = build_sensor_context(
                instance=instance, sensor_name=name, resources=resources, definitions=defs
            )
            began = time.perf_counter()
            result = sensor(context)
            seconds = time.perf_counter() - began
            if isinstance(result, SensorResult):
                for request in result.dynamic_partitions_requests or []:
                    instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            return result, seconds

        def unseen() -> int:
            with engine_for(deployment.database_url).connect() as conn:
                return unseen_paths(conn, scan_landing(landing)).height

        backlog_ticks = []
        while unseen():
            result, seconds = tick(new_data_sensor, "new_data_sensor")
            staged = len(result.run_requests) if isinstance(result, SensorResult) else 0
            backlog_ticks.append(round(seconds, 2))
        began = time.perf_counter()
        for request in result.run_requests:
            outcome = defs.resolve_job_def(request.job_name).execute_in_process(
                instance=instance, tags=request.tags, raise_on_error=False
            )
            assert outcome.success
        ingest_seconds = time.perf_counter() - began
        steady = [tick(new_data_sensor, "new_data_sensor")[1] for _ in range(STEADY_TICKS)]
        _, cascade_seconds = tick(retraining_cascade_sensor, "retraining_cascade_sensor")
        (backfill,) = instance.get_backfills()
        target = backfill.asset_backfill_data.target_subset
        cascade_partitions = target.num_partitions_and_non_partitioned_assets
        # Ten series send a corrected file.
        for index in range(10):
            path = landing / f"store-{index * 997:05d}.csv"
            corrected = frame.filter(frame["unique_id"] == path.stem)
            corrected.with_columns(corrected["y"] + 1.0).write_csv(path)
        changed_result, changed_seconds = tick(new_data_sensor, "new_data_sensor")
        write_result(
            "sensor_tick",
            {
                "series": SERIES,
                "landed_files": SERIES,
                "rows": frame.height,
                "write_files_seconds": round(write_seconds, 1),
                "files_per_tick": MAX_FILES_PER_TICK,
                "backlog_tick_seconds": backlog_ticks,
                "steady_tick_seconds_median": round(statistics.median(steady), 3),
                "steady_tick_seconds": [round(s, 3) for s in steady],
                "ten_changed_files_tick_seconds": round(changed_seconds, 2),
                "ten_changed_files_run_requests": len(changed_result.run_requests),
                "runs_requested_last_backlog_tick": staged,
                "ingest_run_seconds": round(ingest_seconds, 1),
                "cascade_tick_seconds_10000_cells": round(cascade_seconds, 2),
                "cascade_backfill_partitions": cascade_partitions,
                "peak_rss_mb": round(peak_rss_mb()),
                "cpu_count": os.cpu_count(),
            },
        )


if __name__ == "__main__":
    main()
