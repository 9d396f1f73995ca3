"""A whole weekly cycle at N series: model work against Dagster's orchestration, memory, files.

The deployment first holds `--history-weeks` weeks of hourly data for N series (set-up, not
measured). Then one new week lands for every series and the cycle runs exactly as the CLI and
the automation run it, each stage one in-process Dagster run on the deployment's PostgreSQL
instance:

  ingest (raw_observations + observation_history) → correlation_study → feature_table +
  granger_study → training_panel, tuning, global_models, local_models → backtest_folds,
  model_selection, predictions → feature_effects → forecast_accuracy

Each run's wall time (creation to end, from the run record) is split with its event log:
*asset work* is each step from STEP_START to its first materialization (or to its end when it
materializes nothing), i.e. the asset bodies, models and SQL; *orchestration* is the rest:
run creation with its planned events, per-key materialization and check events, step
set-up. Peak RSS is sampled per stage; files and bytes under FP_HOME's IO manager folder and
MLflow artifacts are counted before and after the cycle.

Usage: python benchmarks/weekly_cycle.py --series 1000
Writes benchmarks/results/weekly_cycle_<series>.json.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from _common import configure, fresh_database, hourly_series, write_result
from sqlalchemy import text

CYCLE_END = datetime(2024, 6, 2)  # a Sunday: the new week is 2024-05-26 .. 2024-06-01
PARTITION_START = "2024-05-12"  # two weekly windows of history slice before the new one
BUDGET_ORCHESTRATION_S = 300
# Model configuration of the cycle: the catalog's cheapest real families, so the run measures
# the pipeline at scale rather than model quality. Two folds, ensembles on.
GLOBAL = {"families": ["NHITS"], "max_steps": 10, "input_size": 48, "batch_size": 32}
SEARCH = {"families": [], "trials": 0}
LOCAL = {"families": ["SeasonalNaive"]}
BACKTEST = {**GLOBAL, "n_windows": 2}
CONFIG_BY_ASSET = {
    "global_models": GLOBAL,
    "hyperparameter_search": SEARCH,
    "local_models": LOCAL,
    "backtest_folds": BACKTEST,
}


def run_config(assets: list[str]) -> dict:
    """The run config of a run over `assets`: the cycle's model settings of those among them."""
    return {"ops": {name: {"config": CONFIG_BY_ASSET[name]} for name in assets if name in CONFIG_BY_ASSET}}


class PeakRss:
    """Samples this process's resident memory every 0.2 s; `stage()` reports each stage's peak."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self._peak = max(self._peak, self._process.memory_info().rss)

    @contextmanager
    def stage(self, peaks: dict[str, float], name: str) -> Iterator[None]:
        self._peak = self._process.memory_info().rss
        yield
        self._peak = max(self._peak, self._process.memory_info().rss)
        peaks[name] = round(self._peak / 2**20)

    def close(self) -> None:
        self._stop.set()


def folder_footprint(*folders: Path) -> dict[str, int]:
    files = [path for folder in folders if folder.exists() for path in folder.rglob("*") if path.is_file()]
    return {"files": len(files), "bytes": sum(path.stat().st_size for path in files)}


def split_run(engine, run_id: str) -> dict[str, Any]:
    """Wall, asset work and orchestration of one run, from its record and event log."""
    with engine.connect() as conn:
        run = conn.execute(
            text("SELECT create_timestamp, end_time FROM runs WHERE run_id = :run_id"), {"run_id": run_id}
        ).one()
        steps = conn.execute(
            text(
                """
                SELECT step_key,
                       min(timestamp) FILTER (WHERE dagster_event_type = 'STEP_START') AS started,
                       min(timestamp) FILTER (
                           WHERE dagster_event_type = 'ASSET_MATERIALIZATION') AS first_out,
                       max(timestamp) FILTER (
                           WHERE dagster_event_type IN ('STEP_SUCCESS', 'STEP_FAILURE')) AS ended
                FROM event_logs WHERE run_id = :run_id AND step_key IS NOT NULL
                GROUP BY step_key
                """
            ),
            {"run_id": run_id},
        ).all()
        counts = dict(
            conn.execute(
                text(
                    "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = :run_id "
                    "GROUP BY dagster_event_type"
                ),
                {"run_id": run_id},
            ).all()
        )
    wall = run.end_time - run.create_timestamp.timestamp()
    work = {
        step.step_key: ((step.first_out or step.ended) - step.started).total_seconds()
        for step in steps
        if step.started is not None and (step.first_out or step.ended) is not None
    }
    return {
        "wall_s": round(wall, 2),
        "asset_work_s": round(sum(work.values()), 2),
        "orchestration_s": round(wall - sum(work.values()), 2),
        "steps_work_s": {key: round(value, 2) for key, value in work.items()},
        "planned_events": counts.get("ASSET_MATERIALIZATION_PLANNED", 0),
        "materializations": counts.get("ASSET_MATERIALIZATION", 0),
        "check_evaluations": counts.get("ASSET_CHECK_EVALUATION", 0),
    }


def run_cycle(instance, deployment, window: str, keys: list[str], stage: Callable) -> dict[str, list[str]]:
    """The weekly cycle's runs, by stage: `forecasting-pipeline ingest`, then the runs of
    `operations.forecast` (same launchers, same order) one stage at a time, then accuracy."""
    from forecasting_pipeline import operations
    from forecasting_pipeline.automation import launch
    from forecasting_pipeline.automation.jobs import accuracy_job
    from forecasting_pipeline.partitions import series_date_range

    start, end = series_date_range(window, keys)
    stages = {
        "ingestion": lambda: operations.ingest(instance, deployment, progress=lambda _: None).run_ids,
        "correlations": lambda: [launch.study_correlations(instance, window).run_id],
        "features and granger": lambda: [launch.study_series(instance, window, keys).run_id],
        "training": lambda: [
            launch.train_window(
                instance,
                window,
                run_config=run_config(["global_models", "hyperparameter_search", "local_models"]),
            ).run_id
        ],
        "backtests, selection, publication": lambda: [
            launch.forecast_window(instance, window, keys, run_config=run_config(["backtest_folds"])).run_id
        ],
        "feature effects": lambda: [launch.measure_feature_effects(instance, window).run_id],
        "accuracy": lambda: [launch.run_partition_range(accuracy_job.name, instance, start, end).run_id],
    }
    runs: dict[str, list[str]] = {}
    for name, run in stages.items():
        with stage(name):
            runs[name] = run()
    failed = [
        run_id for ids in runs.values() for run_id in ids if not instance.get_run_by_id(run_id).is_success
    ]
    assert not failed, f"runs failed: {failed}"
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--history-weeks", type=int, default=3)
    args = parser.parse_args()
    with fresh_database() as url:
        home = configure(url, FP_PARTITION_START=PARTITION_START)
        from dagster import DagsterInstance

        from forecasting_pipeline import operations
        from forecasting_pipeline.bootstrap import prepare_deployment
        from forecasting_pipeline.resources.database import engine_for
        from forecasting_pipeline.schemas import SERIES_DIMENSION

        deployment = prepare_deployment()
        landing = deployment.settings.landing_dir
        landing.mkdir(parents=True, exist_ok=True)
        hours = (args.history_weeks + 1) * 168
        frame = hourly_series(args.series, hours, CYCLE_END)
        new_week_start = CYCLE_END - timedelta(days=7)
        instance = DagsterInstance.get()
        engine = engine_for(deployment.database_url)

        started = time.perf_counter()
        frame.filter(frame["ds"] < new_week_start.strftime("%Y-%m-%d")).write_csv(landing / "history.csv")
        operations.ingest(instance, deployment, progress=lambda _: None)
        setup_s = time.perf_counter() - started

        frame.filter(frame["ds"] >= new_week_start.strftime("%Y-%m-%d")).write_csv(landing / "new_week.csv")
        folders = (home / "storage", home / "mlartifacts")
        files_before = folder_footprint(*folders)
        rss = PeakRss()
        peaks: dict[str, float] = {}
        window = new_week_start.strftime("%Y-%m-%d")
        started = time.perf_counter()
        runs = run_cycle(
            instance,
            deployment,
            window,
            list(instance.get_dynamic_partitions(SERIES_DIMENSION)),
            lambda name: rss.stage(peaks, name),
        )
        cycle_s = time.perf_counter() - started
        rss.close()
        files_after = folder_footprint(*folders)

        by_run = {
            f"{stage} {index}": {"job": instance.get_run_by_id(run_id).job_name, **split_run(engine, run_id)}
            for stage, run_ids in runs.items()
            for index, run_id in enumerate(run_ids)
        }
        work = sum(run["asset_work_s"] for run in by_run.values())
        orchestration = sum(run["orchestration_s"] for run in by_run.values())
        keys = sum(run["planned_events"] for run in by_run.values())
        with engine.connect() as conn:
            event_log_bytes = conn.execute(
                text("SELECT pg_total_relation_size('public.event_logs')")
            ).scalar()
        instance.dispose()
        write_result(
            f"weekly_cycle_{args.series}",
            {
                "what": f"one weekly cycle over {args.series:,} hourly series ({args.history_weeks} weeks of "
                "history already ingested): every stage of the graph, as in-process runs on PostgreSQL",
                "date": datetime.now().isoformat(timespec="seconds"),
                "cpus": os.cpu_count(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "models": CONFIG_BY_ASSET,
                "setup_ingest_s": round(setup_s, 1),
                "cycle_wall_s": round(cycle_s, 1),
                "runs_wall_s": round(sum(run["wall_s"] for run in by_run.values()), 1),
                "asset_work_s": round(work, 1),
                "orchestration_s": round(orchestration, 1),
                "orchestration_budget_s": BUDGET_ORCHESTRATION_S,
                "within_budget": orchestration <= BUDGET_ORCHESTRATION_S,
                "planned_partition_events": keys,
                "orchestration_ms_per_planned_key": round(1000 * orchestration / max(keys, 1), 2),
                "peak_rss_mb": peaks,
                "intermediate_files": {
                    "before": files_before,
                    "after": files_after,
                    "added_by_cycle": {k: files_after[k] - files_before[k] for k in files_after},
                    "folders": [str(folder.relative_to(home)) for folder in folders],
                },
                "event_log_bytes_after": event_log_bytes,
                "runs": by_run,
            },
        )


if __name__ == "__main__":
    main()
