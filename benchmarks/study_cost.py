"""What the driver-study stage costs at 1,000 hourly series × one weekly window.

Why: the claim "studies for 1,000 series × one window finish within a recorded time" needs a
recorded time. The studies are `correlation_study` (per window, job `study_correlations`),
`feature_table` and `granger_study` (per series × window, job `study_series`) and
`feature_effects` (per window, job `measure_feature_effects`, which needs the window's
backtests and published champions first).

Data: `--series` synthetic hourly series over `--weeks` weeks (`_common.hourly_series`) with two
drivers: `temperature`, independent noise, and `load`, a random walk that leads the target by
three hours (y = hourly_series' y + 2·load three hours earlier). A study that works at scale
finds `load` in (nearly) every series at lag 3 and `temperature` in (nearly) none, so those
counts are recorded as a sanity check beside the times. The panel is landed as one CSV and
ingested with `operations.ingest`, as a user would; the calendar is pinned so the older weeks
form the history slice and the newest week is the one `date` window studied.

Measured on the newest window, each launch in this process (Dagster's in-process executor):
`launch.study_correlations`, `launch.study_series` (with each step's own duration from the
run's step stats), then, untimed as studies but recorded, training of local statistical
families only and the publication job with a small backtest, and finally
`launch.measure_feature_effects` alone. Rows written per study table are counted in the
database. `--profile` additionally profiles the study_series run with cProfile (use it at
about 100 series; the profile itself slows the run, so its times are not the benchmark's).

Run from the repository root:

    .venv/bin/python benchmarks/study_cost.py [--series 1000] [--weeks 5] [--profile]

Writes benchmarks/results/study_cost.json (or study_cost_profile.json with --profile).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import io
import os
import platform
import pstats
import shutil
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _common import configure, fresh_database, hourly_series, peak_rss_mb, write_result

NAME = "study_cost"
WINDOW_END = datetime(2024, 6, 2)  # a Sunday: weekly windows are whole weeks ending here
LOAD_LEAD_HOURS = 3
LOAD_EFFECT = 2.0
SIGNIFICANT = 0.01  # adjusted p-value of the sanity counts
# The local families evaluation_cost.py trains (no tuning, no neural family): training and
# publication are only the prerequisites of feature_effects here, not what is measured.
FAMILIES = ("SeasonalNaive", "AutoTheta", "CrostonOptimized")
TRAIN_CONFIG = {
    "ops": {
        "global_models": {"config": {"families": []}},
        "hyperparameter_search": {"config": {"families": []}},
        "local_models": {"config": {"families": list(FAMILIES)}},
    }
}
PUBLISH_CONFIG = {
    "ops": {"backtest_folds": {"config": {"families": list(FAMILIES), "n_windows": 2, "ensembles": False}}}
}
STUDY_TABLES = ("features", "correlations", "granger_tests", "feature_importances")


class StageFailedError(RuntimeError):
    """A Dagster run of the benchmark failed; the message carries every failed step's error."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def other_pytest_processes() -> int:
    """How many pytest processes run beside this one: they share the 2 cores and slow every stage."""
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        # A `timeout … python -m pytest` wrapper is not a second run: count the Python processes.
        count += b"pytest" in cmdline and b"python" in cmdline.split(b" ", 1)[0]
    return count


def load_snapshot() -> dict[str, Any]:
    """Load average and competing test runs, recorded before each stage (the machine is shared)."""
    return {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "other_pytest_processes": other_pytest_processes(),
    }


# --- data ---------------------------------------------------------------------------------------------


def driver_panel(series: int, hours: int, end: datetime, seed: int = 11) -> pl.DataFrame:
    """`hourly_series` plus a driver `load` that leads y by LOAD_LEAD_HOURS, built set-wise.

    `load` is a random walk (so both sides need one difference, and the lead survives it as a
    lag-3 effect rather than being smeared over lags 3 and 4); it is drawn LOAD_LEAD_HOURS longer
    than the series so every target hour, the first ones included, has its leading value.
    """
    base = hourly_series(series, hours, end)
    rng = np.random.default_rng(seed)
    walk = 50 + np.cumsum(rng.normal(0, 1, (series, hours + LOAD_LEAD_HOURS)), axis=1)
    load = walk[:, LOAD_LEAD_HOURS:]  # the driver as observed at each target hour
    leading = walk[:, :-LOAD_LEAD_HOURS]  # its value LOAD_LEAD_HOURS earlier
    y = base["y"].to_numpy().reshape(series, hours) + LOAD_EFFECT * leading
    return base.with_columns(
        pl.Series("y", np.round(y.ravel(), 3)), pl.Series("load", np.round(load.ravel(), 3))
    ).select("unique_id", "ds", "y", "temperature", "load")


# --- run facts ----------------------------------------------------------------------------------------


def failures(result: Any) -> list[str]:
    """Every failed step's error of a run, in full (what a loud failure should print)."""
    return [
        f"{event.step_key}: {event.step_failure_data.error.to_string()}"
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error
    ]


def step_times(instance: Any, run_id: str, called: float, returned: float) -> dict[str, Any]:
    """Each step's own wall (start to end) from Dagster's step stats of the run, and the run's
    time outside its steps split into before the first step (run creation: one planned event
    per asset and partition key) and after the last one."""
    stats = instance.get_run_step_stats(run_id)
    starts = [s.start_time for s in stats if s.start_time]
    ends = [s.end_time for s in stats if s.end_time]
    return {
        "steps_s": {s.step_key: round((s.end_time or 0.0) - (s.start_time or 0.0), 2) for s in stats},
        "before_first_step_s": round(min(starts) - called, 2) if starts else None,
        "after_last_step_s": round(returned - max(ends), 2) if ends else None,
    }


def timed_launch(what: str, launch_call: Callable[[], Any], instance: Any) -> dict[str, Any]:
    """Launch one run, fail loudly if any step failed, and return its wall and step walls."""
    before = load_snapshot()
    log(f"{what} ...")
    called, started = time.time(), time.perf_counter()
    outcome = launch_call()
    wall, returned = time.perf_counter() - started, time.time()
    if not outcome.success:
        messages = failures(outcome)
        for message in messages:
            print(message, flush=True)
        raise StageFailedError(f"{what} run {outcome.run_id} failed: " + " | ".join(messages))
    times = step_times(instance, outcome.run_id, called, returned)
    steps = times["steps_s"]
    log(
        f"{what}: {wall:.1f} s  "
        + ", ".join(f"{k} {v} s" for k, v in steps.items())
        + f"; before first step {times['before_first_step_s']} s"
    )
    return {
        "wall_s": round(wall, 2),
        **times,
        "outside_steps_s": round(wall - sum(steps.values()), 2),
        "run_id": outcome.run_id,
        "before": before,
    }


def study_rows(engine: Any, window: str) -> dict[str, int]:
    """Rows each study table holds for the window (every writer replaces its window's slice)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return {
            name: int(
                conn.execute(
                    text(f"SELECT count(*) FROM forecasting.{name} WHERE window_key = :w"), {"w": window}
                ).scalar_one()
            )
            for name in STUDY_TABLES
        }


def sanity(engine: Any, window: str) -> dict[str, Any]:
    """What the studies found: `load` should lead at lag 3 everywhere, `temperature` nowhere."""
    from sqlalchemy import text

    def scalar(sql: str) -> int:
        params = {"w": window, "a": SIGNIFICANT} if ":a" in sql else {"w": window}
        return int(conn.execute(text(sql), params).scalar_one())

    driver = "window_key = :w AND cause_kind = 'driver' AND direction = 'driver_to_target'"
    with engine.connect() as conn:
        lags = conn.execute(
            text(
                f"SELECT lag, count(*) FROM forecasting.granger_tests WHERE {driver} AND cause = 'load' "
                "AND adjusted_p < :a GROUP BY 1 ORDER BY 1"
            ),
            {"w": window, "a": SIGNIFICANT},
        ).all()
        best_lags = conn.execute(
            text(
                "SELECT best_lag, count(*) FROM forecasting.correlations WHERE window_key = :w "
                "AND kind = 'driver' AND other = 'load' GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
            ),
            {"w": window},
        ).all()
        selection = conn.execute(
            text(
                "SELECT driver, selected, series_tested, series_passing, median_lag "
                "FROM forecasting.driver_selection WHERE window_key = :w ORDER BY driver"
            ),
            {"w": window},
        ).mappings()
        importances = conn.execute(
            text(
                "SELECT feature_group, round(importance::numeric, 4) AS importance, rank "
                "FROM forecasting.feature_importances WHERE window_key = :w ORDER BY rank"
            ),
            {"w": window},
        ).mappings()
        return {
            "granger_load_found (adjusted_p < 0.01, lag 3)": scalar(
                f"SELECT count(*) FROM forecasting.granger_tests WHERE {driver} AND cause = 'load' "
                f"AND adjusted_p < :a AND lag = {LOAD_LEAD_HOURS}"
            ),
            "granger_load_significant_any_lag": scalar(
                f"SELECT count(*) FROM forecasting.granger_tests WHERE {driver} AND cause = 'load' "
                "AND adjusted_p < :a"
            ),
            # `lag` is the VAR order BIC chose for the pair, not the lead: an order of at least 3
            # includes the lead; an order of exactly 3 is the brief's stricter count above.
            "granger_load_significant_with_lag_at_least_3": scalar(
                f"SELECT count(*) FROM forecasting.granger_tests WHERE {driver} AND cause = 'load' "
                f"AND adjusted_p < :a AND lag >= {LOAD_LEAD_HOURS}"
            ),
            "granger_load_significant_by_lag": {int(lag): int(n) for lag, n in lags},
            "granger_temperature_flagged (adjusted_p < 0.01)": scalar(
                f"SELECT count(*) FROM forecasting.granger_tests WHERE {driver} AND cause = 'temperature' "
                "AND adjusted_p < :a"
            ),
            "granger_feedback_flagged (target_to_driver, adjusted_p < 0.01)": scalar(
                "SELECT count(*) FROM forecasting.granger_tests WHERE window_key = :w "
                "AND direction = 'target_to_driver' AND adjusted_p < :a"
            ),
            "granger_not_testable": scalar(
                "SELECT count(*) FROM forecasting.granger_tests WHERE window_key = :w AND NOT testable"
            ),
            "correlation_best_lag_of_load (lag: series)": {int(lag): int(n) for lag, n in best_lags},
            "driver_selection": [dict(row) for row in selection],
            "feature_importances": [{**row, "importance": float(row["importance"])} for row in importances],
        }


def profile_top(profiler: cProfile.Profile, rows: int = 30) -> dict[str, str]:
    """The profile's top functions by cumulative and by own time, as pstats prints them."""
    out = {}
    for key in ("cumulative", "tottime"):
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats(key).print_stats(rows)
        out[key] = buffer.getvalue()
    return out


def package_digest() -> str:
    """A digest of the package's code: the package is edited while benchmarks run, so the result
    says which code it measured (and whether it changed underneath the run)."""
    root = Path(__file__).resolve().parent.parent / "forecasting_pipeline"
    digest = hashlib.sha256()
    for path in sorted([*root.rglob("*.py"), *root.rglob("*.yaml")]):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def serial_granger_config() -> dict[str, Any] | None:
    """Run config keeping granger_study's tests in this process, so cProfile sees them (worker
    processes are invisible to it); None when the asset has no `n_jobs` setting."""
    from forecasting_pipeline.assets.studies import GrangerConfig

    if "n_jobs" not in GrangerConfig.model_fields:
        return None
    return {"ops": {"granger_study": {"config": {"n_jobs": 1}}}}


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("dagster", "polars", "statsmodels", "statsforecast")},
    }


# --- the benchmark ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, result: dict[str, Any]) -> None:
    from dagster import DagsterInstance

    from forecasting_pipeline import operations
    from forecasting_pipeline.automation import launch
    from forecasting_pipeline.bootstrap import prepare_deployment
    from forecasting_pipeline.resources.database import DatabaseResource, engine_for
    from forecasting_pipeline.schemas import SERIES_DIMENSION

    deployment = prepare_deployment()
    hours = args.weeks * 168
    started = time.perf_counter()
    panel = driver_panel(args.series, hours, WINDOW_END)
    landing = deployment.settings.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    panel.write_csv(landing / "study_panel.csv")
    result["data"] = {
        "series": args.series,
        "hours_per_series": hours,
        "rows": panel.height,
        "drivers": {
            "temperature": "independent noise",
            "load": f"random walk leading y by {LOAD_LEAD_HOURS} h (y += {LOAD_EFFECT} * load[t-3])",
        },
        "generate_and_land_s": round(time.perf_counter() - started, 1),
    }
    log(f"{args.series} series × {hours} h = {panel.height:,} rows landed")
    del panel

    instance = DagsterInstance.get()
    engine = engine_for(deployment.database_url)
    started = time.perf_counter()
    ingested = operations.ingest(instance, deployment, progress=lambda m: log(f"  ingest: {m}"))
    window = operations.latest_window(DatabaseResource(url=deployment.database_url))
    keys = list(instance.get_dynamic_partitions(SERIES_DIMENSION))
    result["ingest"] = {
        "wall_s": round(time.perf_counter() - started, 1),
        "rows_accepted": sum(f.rows_accepted for f in ingested.files),
        "windows_versioned": ingested.windows,
        "series_partition_keys": len(keys),
    }
    result["window"] = window
    log(f"ingested in {result['ingest']['wall_s']} s; studying window {window}")

    stages: dict[str, Any] = {}
    result["stages"] = stages
    stages["study_correlations"] = timed_launch(
        "study_correlations (correlation_study)",
        lambda: launch.study_correlations(instance, window),
        instance,
    )
    profiler = cProfile.Profile() if args.profile else None
    series_config = serial_granger_config() if args.profile else None
    if series_config:
        result["notes"].append("profiled run: granger_study ran with n_jobs 1 (in this process)")

    def study_series() -> Any:
        if profiler is None:
            return launch.study_series(instance, window, keys)
        return profiler.runcall(launch.study_series, instance, window, keys, run_config=series_config)

    stages["study_series"] = timed_launch(
        "study_series (feature_table, granger_study)", study_series, instance
    )
    if profiler is not None:
        result["profile_study_series"] = profile_top(profiler)
    result["rows_after_studies"] = study_rows(engine, window)
    log(f"rows: {result['rows_after_studies']}")

    stages["train_window (not a study)"] = timed_launch(
        f"train_window ({', '.join(FAMILIES)})",
        lambda: launch.train_window(instance, window, run_config=TRAIN_CONFIG),
        instance,
    )
    stages["forecast_window (not a study)"] = timed_launch(
        "forecast_window (backtest n_windows 2, no ensembles)",
        lambda: launch.forecast_window(instance, window, keys, run_config=PUBLISH_CONFIG),
        instance,
    )
    stages["measure_feature_effects"] = timed_launch(
        "measure_feature_effects (feature_effects)",
        lambda: launch.measure_feature_effects(instance, window),
        instance,
    )
    result["rows"] = study_rows(engine, window)
    result["sanity"] = sanity(engine, window)
    study_stages = ("study_correlations", "study_series", "measure_feature_effects")
    result["studies_total_s"] = round(sum(stages[s]["wall_s"] for s in study_stages), 1)
    result["studies_ms_per_series"] = round(result["studies_total_s"] / args.series * 1000, 1)
    instance.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=1000, help="hourly series (default 1000)")
    parser.add_argument("--weeks", type=int, default=5, help="weeks of history per series (default 5)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the study_series run (writes study_cost_profile)"
    )
    args = parser.parse_args()
    if args.weeks < 2:
        parser.error("--weeks must be at least 2: the older weeks form the history slice")

    result: dict[str, Any] = {
        "what": "driver studies (correlation_study; feature_table + granger_study; feature_effects) "
        "over hourly series × the newest weekly window",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "arguments": vars(args),
        "machine": machine(),
        "at_start": load_snapshot(),
        "package_digest_at_start": package_digest(),
        "notes": [],
    }
    started = time.perf_counter()
    newest_week = (WINDOW_END - timedelta(weeks=1)).date()
    with fresh_database() as url:
        # Pinned calendar: the window before the newest also holds every older week (the history
        # slice), so exactly the newest week is the window studied; closed at WINDOW_END.
        home = configure(
            url,
            FP_DATE_CADENCE="weekly",
            FP_PARTITION_START=(newest_week - timedelta(weeks=1)).isoformat(),
            FP_PARTITION_END=WINDOW_END.date().isoformat(),
        )
        try:
            run(args, result)
        except Exception as exc:
            result["error"] = {"message": str(exc), "traceback": traceback.format_exc().splitlines()[-60:]}
            log(f"FAILED: {exc}")
        finally:
            shutil.rmtree(home, ignore_errors=True)
    result["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    result["peak_rss_mb"] = round(peak_rss_mb())
    result["at_end"] = load_snapshot()
    result["package_digest_at_end"] = package_digest()
    if result["package_digest_at_end"] != result["package_digest_at_start"]:
        result["notes"].append(
            "the package's files changed while the benchmark ran: the runs used the modules imported "
            "before the change"
        )
    busy = result["at_start"]["load_average"][0]
    if busy > 1.0 or result["at_start"]["other_pytest_processes"]:
        result["notes"].append(
            f"the {os.cpu_count()} cores were busy at start (1-minute load average {busy:.2f}, "
            f"{result['at_start']['other_pytest_processes']} pytest processes): times are upper bounds; "
            "see each stage's `before` (load averages include this benchmark's own work)"
        )
    write_result(f"{NAME}_profile" if args.profile else NAME, result)
    if "error" in result:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
