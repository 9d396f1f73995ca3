"""Incrementality of the whole graph: one new week for 1% of the series against a full rebuild.

A deployment holds `--windows` weekly windows of hourly data for N series (two weeks of older
data in the history slice). The *full rebuild* ingests all of it and recomputes every asset of
every window as the CLI's `backfill` plans it (one run per job over all windows × series, the
history versions one window each). Then 1% of the series (spread evenly over the partition
order) get one new week; the *increment* is what follows in production: their ingest, then
exactly the retraining cascade's partitions (`automation/cascade.py` decides them from the
changed cells), executed in-process like the rebuild so both pay the same per-run costs.

Reported as ratios of the rebuild: partitions materialized and wall time.
Usage: python benchmarks/incremental_cycle.py --series 1000 --windows 12
Writes benchmarks/results/incremental_cycle.json.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timedelta

import polars as pl
from _common import configure, fresh_database, hourly_series, materializations, write_result
from weekly_cycle import CONFIG_BY_ASSET, run_config

GOAL_RATIO = 0.05


def runs_of_subset(
    subset, series_order: list[str], windows: list[str]
) -> list[tuple[str, list[str], str, str]]:
    """(job, assets, first key, last key) covering an asset graph subset, in dependency order:
    series × date cells as rectangles (`plan_rectangles`, as ingestion plans them), windows one
    run each."""
    from forecasting_pipeline.automation.backfills import BACKFILL_ORDER
    from forecasting_pipeline.automation.jobs import JOBS
    from forecasting_pipeline.automation.planning import plan_rectangles
    from forecasting_pipeline.definitions import defs
    from forecasting_pipeline.partitions import series_date_partitions, series_date_range

    graph = defs.resolve_asset_graph()
    keys_by_asset = {
        key.to_user_string(): [str(k) for k in partitions.get_partition_keys()]
        for key, partitions in subset.partitions_subsets_by_asset_key.items()
    }
    jobs = {job.name: job for job in JOBS}
    runs = []
    for job_name in BACKFILL_ORDER:
        members = {key.to_user_string() for key in jobs[job_name].selection.resolve(graph)}
        selected = sorted(members & set(keys_by_asset))
        if not selected:
            continue
        partition_keys = sorted({key for name in selected for key in keys_by_asset[name]})
        if jobs[job_name].partitions_def == series_date_partitions:
            # Keys are `window|series` (partitions.parse_series_date_key), split column-wise.
            cells = (
                pl.DataFrame({"key": partition_keys})
                .select(
                    pl.col("key").str.splitn("|", 2).struct.rename_fields(["window_key", "partition_key"])
                )
                .unnest("key")
            )
            for rectangle in plan_rectangles(cells, series_order, windows):
                first, _ = series_date_range(rectangle.first_window, rectangle.series_keys)
                _, last = series_date_range(rectangle.last_window, rectangle.series_keys)
                runs.append((job_name, selected, first, last))
        else:
            runs.extend((job_name, selected, window, window) for window in partition_keys)
    return runs


def execute(instance, planned) -> tuple[list[str], float]:
    from forecasting_pipeline.automation import launch

    started = time.perf_counter()
    run_ids = []
    for job_name, assets, first, last in planned:
        result = launch.run_partition_range(
            job_name, instance, first, last, run_config=run_config(assets), assets=assets
        )
        assert result.success, f"{job_name} {first}..{last} failed"
        run_ids.append(result.run_id)
    return run_ids, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=12)
    args = parser.parse_args()
    first_window = datetime(2024, 3, 3)  # a Sunday
    rebuild_end = first_window + timedelta(weeks=args.windows)
    with fresh_database() as url:
        configure(
            url,
            FP_PARTITION_START=first_window.date().isoformat(),
            # One window after the rebuild's: the new week lands there.
            FP_PARTITION_END=(rebuild_end + timedelta(weeks=1)).date().isoformat(),
        )
        from dagster import DagsterInstance

        from forecasting_pipeline import operations
        from forecasting_pipeline.automation.backfills import backfill_plan
        from forecasting_pipeline.automation.cascade import cascade_subset
        from forecasting_pipeline.bootstrap import prepare_deployment
        from forecasting_pipeline.partitions import date_partitions
        from forecasting_pipeline.resources.database import engine_for
        from forecasting_pipeline.schemas import SERIES_DIMENSION
        from forecasting_pipeline.series_keys import partition_key

        deployment = prepare_deployment()
        landing = deployment.settings.landing_dir
        landing.mkdir(parents=True, exist_ok=True)
        hours = (args.windows + 2) * 7 * 24
        history = hourly_series(args.series, hours, rebuild_end)
        history.write_csv(landing / "history.csv")
        instance = DagsterInstance.get()
        engine = engine_for(deployment.database_url)

        started = time.perf_counter()
        ingest_runs = operations.ingest(instance, deployment, progress=lambda _: None).run_ids
        keys = list(instance.get_dynamic_partitions(SERIES_DIMENSION))
        windows = date_partitions.get_partition_keys()
        rebuilt = [w for w in windows if w < rebuild_end.strftime("%Y-%m-%d")]
        plan = backfill_plan(list(operations.BACKFILL_DEFAULT_ASSETS), rebuilt[0], rebuilt[-1], keys)
        rebuild_runs, _ = execute(instance, plan)
        rebuild_s = time.perf_counter() - started
        rebuild_partitions = materializations(engine, ingest_runs + rebuild_runs)

        extended = hourly_series(args.series, hours + 168, rebuild_end + timedelta(weeks=1))
        changed_ids = [f"store-{i:05d}" for i in range(0, args.series, 100)]
        new_week = extended.filter(
            pl.col("unique_id").is_in(changed_ids) & (pl.col("ds") >= rebuild_end.strftime("%Y-%m-%d"))
        )
        new_week.write_csv(landing / "late_week.csv")
        started = time.perf_counter()
        increment_ingest = operations.ingest(instance, deployment, progress=lambda _: None).run_ids
        new_window = windows[len(rebuilt)]
        cells = pl.DataFrame(
            {
                "series_id": changed_ids,
                "partition_key": [partition_key(series_id) for series_id in changed_ids],
                "window_key": [new_window] * len(changed_ids),
            }
        )
        cascade_runs, _ = execute(
            instance, runs_of_subset(cascade_subset(cells, new_window, keys), keys, windows)
        )
        increment_s = time.perf_counter() - started
        increment_partitions = materializations(engine, increment_ingest + cascade_runs)
        instance.dispose()
        write_result(
            "incremental_cycle",
            {
                "what": f"{args.series:,} hourly series, {args.windows} weekly windows rebuilt; then one "
                f"new week for {len(changed_ids)} series ({len(changed_ids) / args.series:.0%}) and the "
                "cascade it sets off",
                "date": datetime.now().isoformat(timespec="seconds"),
                "cpus": os.cpu_count(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "models": CONFIG_BY_ASSET,
                "full_rebuild": {
                    "runs": len(ingest_runs) + len(rebuild_runs),
                    "partitions_materialized": rebuild_partitions,
                    "wall_s": round(rebuild_s, 1),
                },
                "increment": {
                    "runs": len(increment_ingest) + len(cascade_runs),
                    "partitions_materialized": increment_partitions,
                    "wall_s": round(increment_s, 1),
                },
                "partitions_ratio": round(increment_partitions / rebuild_partitions, 4),
                "wall_ratio": round(increment_s / rebuild_s, 4),
                "goal_ratio": GOAL_RATIO,
            },
        )


if __name__ == "__main__":
    main()
