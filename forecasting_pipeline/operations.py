"""What the CLI commands do, as functions: land, ingest and forecast against an instance.

Kept apart from argument parsing so tests drive exactly the code path users run. Nothing here
imports the partitions at module level: `ingest` decides the deployment's calendar from the data
before any Dagster definition is built from it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import polars as pl
from dagster import DagsterInstance, ExecuteInProcessResult, JobExecutionResult

from forecasting_pipeline.bootstrap import Deployment
from forecasting_pipeline.calendar import DateCalendar, load_calendar, save_calendar
from forecasting_pipeline.ingestion.reader import discover_files
from forecasting_pipeline.ingestion.roots import real_path, refuse_outside
from forecasting_pipeline.ingestion.staging import (
    FileOutcome,
    StagedBatch,
    content_hash,
    move_rejected,
    stage_landed_files,
)
from forecasting_pipeline.ingestion.validation import ColumnRoles
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.schemas import SERIES_DIMENSION
from forecasting_pipeline.storage.catalog import newest_observation_ts
from forecasting_pipeline.storage.observations import clear_pending_history, earliest_pending_history
from forecasting_pipeline.storage.staging import release_held_files

Progress = Callable[[str], None]


@runtime_checkable
class Tracker(Protocol):
    """Progress of counted work (files, runs, steps) besides plain messages.

    `forecasting_pipeline.console.Progress` draws it as a bar or as plain lines; a plain message
    callback (what tests and benchmarks pass) is adapted by `_tracker`, so callers choose how much
    they want to see and the operations report the same events either way.
    """

    def __call__(self, message: str) -> None: ...
    def start(self, total: int, label: str, unit: str = "") -> None: ...
    def advance(self, n: int = 1, detail: str = "", status: str = "ok") -> None: ...
    def finish(self, summary: str = "") -> None: ...


class _MessagesOnly:
    """A message callback as a Tracker: each event's detail becomes one message, nothing else."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def __call__(self, message: str) -> None:
        self._progress(message)

    def start(self, total: int, label: str, unit: str = "") -> None:
        pass

    def advance(self, n: int = 1, detail: str = "", status: str = "ok") -> None:
        if detail:
            self._progress(detail)

    def finish(self, summary: str = "") -> None:
        pass


def _tracker(progress: Progress | Tracker) -> Tracker:
    return progress if isinstance(progress, Tracker) else _MessagesOnly(progress)


class PipelineRunError(RuntimeError):
    """A Dagster run launched by the CLI failed; the message names the run to inspect."""


class PipelineInterruptedError(PipelineRunError):
    """Ctrl-C reached a run: Dagster turns it into a failed step, and the command stops there."""


@dataclass(frozen=True)
class IngestSummary:
    batch: StagedBatch
    run_ids: list[str]
    windows: list[str]  # windows whose history got a new version
    latest_window: str | None
    seconds: float

    @property
    def files(self) -> list[FileOutcome]:
        return self.batch.files

    @property
    def cells(self) -> int:
        """Changed series × window cells the ingest ran."""
        return self.batch.cells.height

    @property
    def new_series(self) -> list[str]:
        return self.batch.new_series


@dataclass(frozen=True)
class ForecastSummary:
    window: str
    train_run_id: str
    forecast_run_id: str
    train_seconds: float
    forecast_seconds: float
    series_keys: list[str]


_DAGSTER_ERROR_PREFIX = re.compile(r"^dagster\._core\.errors\.\w+: ")
_HELD_HINT = (
    " (the batch is held: see forecasting.data_quality_results and forecasting.landed_files; "
    "fix and re-land it, or accept it with `forecasting-pipeline ingest --release-held`)"
)


def root_cause(error: Any) -> str:
    """Dagster wraps the asset's exception; the user needs the innermost message, on one line."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    message = " ".join(error.message.split())
    if "blocking asset check failed" in message:
        message += _HELD_HINT
    return _DAGSTER_ERROR_PREFIX.sub("", message)


class _InterruptWatch:
    """Notices Ctrl-C (or SIGTERM) while an in-process run executes.

    Dagster takes SIGINT over during a run: inside a step it fails the step, between steps it
    only sets a flag that it clears when the run ends, so a Ctrl-C would be lost and the command
    would go on with its next run. The signal's wakeup fd receives every signal Python handles,
    whoever's handler runs, so the command can stop after the run instead.
    """

    def __init__(self) -> None:
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._previous = -1

    def __enter__(self) -> _InterruptWatch:
        if threading.current_thread() is threading.main_thread():
            self._reader, self._writer = socket.socketpair()
            self._reader.setblocking(False)
            self._writer.setblocking(False)
            self._previous = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        return self

    def seen(self) -> bool:
        if self._reader is None:
            return False
        try:
            received = self._reader.recv(256)
        except BlockingIOError:
            return False
        return bool({signal.SIGINT, signal.SIGTERM} & set(received))

    def __exit__(self, *exc_info: object) -> None:
        if self._reader is not None and self._writer is not None:
            signal.set_wakeup_fd(self._previous)
            self._reader.close()
            self._writer.close()


def _stop_if_interrupted(result: ExecuteInProcessResult, what: str) -> None:
    """Raise when a step failed because the user pressed Ctrl-C.

    An in-process run catches the interrupt and records it as the step's failure, so without
    this the command would go on to its next run as if a step had merely failed.
    """
    if result.success:
        return
    for event in result.all_events:
        error = event.step_failure_data.error if event.is_step_failure and event.step_failure_data else None
        while error is not None:
            if error.cls_name == "DagsterExecutionInterruptedError":
                raise PipelineInterruptedError(f"{what} interrupted in Dagster run {result.run_id}")
            error = error.cause


def require_success(result: ExecuteInProcessResult | JobExecutionResult, what: str) -> None:
    """Turn a failed run into one readable error naming the step, its error and the run.

    A step that failed says why in its failure event; a step lost with its Celery worker has
    none, and the run's own failure says which step and worker instead.
    """
    if result.success:
        return
    _stop_if_interrupted(result, what)
    failures = [
        f"{event.step_key}: {root_cause(event.step_failure_data.error)}"
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error
    ] or [
        root_cause(event.job_failure_data.error)
        for event in result.all_events
        if event.is_job_failure and event.job_failure_data and event.job_failure_data.error
    ]
    raise PipelineRunError(
        f"{what} failed in Dagster run {result.run_id}: {'; '.join(failures) or 'see the run in the UI'}"
    )


def latest_window(database: DatabaseResource) -> str:
    """The window holding the newest registered observation."""
    from forecasting_pipeline.partitions import window_key_for

    with database.transaction() as conn:
        newest = newest_observation_ts(conn)
    if newest is None:
        raise PipelineRunError("no series registered yet: land data and run `ingest` first")
    window = window_key_for(newest)
    if window is None:
        raise PipelineRunError(
            f"newest observation {newest} lies after the last date window; check FP_PARTITION_END"
        )
    return window


def land_paths(paths: Sequence[Path], landing_dir: Path, roots: Sequence[Path]) -> list[FileOutcome]:
    """Copy files (and the files of folders) into the landing folder; refuse unknown types.

    Every path, and every file found in a folder, must lie inside `roots` once its links are
    resolved (PathOutsideRootsError otherwise): then nothing is copied at all.
    """
    refuse_outside(paths, roots)
    files, refused = discover_files(paths)
    refuse_outside(files, roots)
    landing_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        source = real_path(path)
        if source.parent != landing_dir.resolve():
            # The checked target, not the link: a link swapped after the check is not followed.
            shutil.copyfile(source, landing_dir / path.name)
    return [FileOutcome(r.path, "rejected", r.rejected_reason or "unreadable") for r in refused]


def land_sql(url: str, query: str, landing_dir: Path) -> Path:
    """Snapshot a SQL source into the landing folder as Parquet, then treat it like any file.

    The snapshot is named after the query (not the URL, which may hold a password), so the same
    unchanged result lands as an unchanged file and does nothing.
    """
    import pandas as pd
    from sqlalchemy import create_engine, literal_column, select, table, text

    from forecasting_pipeline.storage.embedded import with_psycopg2_driver

    engine = create_engine(with_psycopg2_driver(url) if url.startswith("postgres") else url)
    if " " in query.strip():
        statement = text(query)
    else:
        schema, _, name = query.strip().rpartition(".")
        statement = select(literal_column("*")).select_from(table(name, schema=schema or None))
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(statement, conn)
    finally:
        engine.dispose()
    name = hashlib.sha256(query.strip().encode()).hexdigest()[:12]
    landing_dir.mkdir(parents=True, exist_ok=True)
    target = landing_dir / f"sql-{name}.parquet"
    fresh = landing_dir / f".sql-{name}.parquet.partial"
    pl.from_pandas(
        frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object})
    ).write_parquet(fresh)
    # An unchanged result leaves the file untouched, so a sensor tick does not even hash it again.
    if target.exists() and content_hash(target) == content_hash(fresh):
        fresh.unlink()
    else:
        fresh.replace(target)
    return target


def _landed_files(deployment: Deployment) -> list[Path]:
    """Every file in the landing folder; staging refuses (and sets aside) what it cannot read."""
    landing = deployment.settings.landing_dir
    if not landing.is_dir():
        return []
    return sorted(p for p in landing.iterdir() if p.is_file() and not p.name.startswith("."))


def ingest(
    instance: DagsterInstance,
    deployment: Deployment,
    *,
    roles: ColumnRoles | None = None,
    release_held: bool = False,
    progress: Progress | Tracker = print,
    show_steps: bool = False,
) -> IngestSummary:
    """Stage what landed, then run `raw_observations` only for cells with new or changed data.

    A file is read once; an unchanged file does nothing; an unreadable one is set aside. Cells
    run as few partition-range rectangles; each window whose history changed gets a new version.
    `progress` counts the files, then the runs as they finish.
    """
    tracker = _tracker(progress)
    started = time.perf_counter()
    settings = deployment.settings
    database = DatabaseResource(url=deployment.database_url)
    files = _landed_files(deployment)
    calendar = load_calendar(settings)
    with database.transaction() as conn:
        if release_held:
            released = release_held_files(conn)
            tracker(f"released {len(released)} held files after their failed quality checks")
        batch = stage_landed_files(
            conn, files, roles=roles or ColumnRoles(), settings=settings, calendar=calendar
        )
    move_rejected(batch)
    _report_files(tracker, batch.files)
    if not batch.calendar.same_windows(calendar) or (
        not calendar.persisted and batch.calendar.end != calendar.end
    ):
        batch.calendar = save_calendar(settings, batch.calendar)
        tracker(_describe_calendar(batch.calendar))
    if batch.cells.height == 0:
        tracker("nothing new to ingest: no new or changed observations")
        from forecasting_pipeline import partitions

        run_ids: list[str] = []
        versioned, latest = _version_pending_history(
            instance, database, partitions.date_partitions.get_partition_keys(), run_ids, tracker
        )
        return IngestSummary(batch, run_ids, versioned, latest, time.perf_counter() - started)
    return _run_cells(instance, deployment, batch, database, started, tracker, show_steps)


# How each file outcome shows: held and rejected files stay on screen (and in colour).
FILE_STATUS_LEVELS = {"staged": "ok", "unchanged": "ok", "held": "warn", "rejected": "fail"}


def _report_files(tracker: Tracker, files: Sequence[FileOutcome]) -> None:
    """One event per landed file, after staging (which reads them all in one transaction)."""
    if not files:
        return
    tracker.start(len(files), "staging landed files", "files")
    for outcome in files:
        tracker.advance(
            1,
            f"{outcome.path.name}: {outcome.status}: {outcome.message}",
            FILE_STATUS_LEVELS.get(outcome.status, "ok"),
        )
    tracker.finish()


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _describe_calendar(calendar: DateCalendar) -> str:
    end = f"to {calendar.end}" if calendar.end else "to the current window"
    return (
        f"date calendar: {calendar.cadence} windows from {calendar.start} {end} (older data: history slice)"
    )


def _latest_window_or_none(database: DatabaseResource) -> str | None:
    try:
        return latest_window(database)
    except PipelineRunError:
        return None


def _run_cells(
    instance: DagsterInstance,
    deployment: Deployment,
    batch: StagedBatch,
    database: DatabaseResource,
    started: float,
    tracker: Tracker,
    show_steps: bool,
) -> IngestSummary:
    from forecasting_pipeline import partitions
    from forecasting_pipeline.automation import launch
    from forecasting_pipeline.automation.planning import plan_rectangles

    if not partitions.loaded_calendar.same_windows(batch.calendar):
        raise PipelineRunError(
            f"the deployment's date calendar changed ({_describe_calendar(batch.calendar)}) after this "
            "process built its partitions; run the command again to ingest with it"
        )
    existing = set(instance.get_dynamic_partitions(SERIES_DIMENSION))
    new_keys = sorted(set(batch.cells["partition_key"].to_list()) - existing)
    if new_keys:
        instance.add_dynamic_partitions(SERIES_DIMENSION, new_keys)
        tracker(f"added {len(new_keys)} series partitions")
    order = list(instance.get_dynamic_partitions(SERIES_DIMENSION))
    windows = partitions.date_partitions.get_partition_keys()
    rectangles = plan_rectangles(batch.cells, order, windows)
    waiting = batch.cells.filter(~pl.col("window_key").is_in(windows)).height
    tracker(
        f"{batch.cells.height - waiting} changed series × window cells in {_runs(len(rectangles))}"
        + (f"; {waiting} cells wait for their window to open" if waiting else "")
    )
    run_ids: list[str] = []
    failure: PipelineRunError | None = None
    tracker.start(len(rectangles), "ingestion runs", "runs")
    try:
        for rectangle in rectangles:
            result = _execute(
                instance,
                "ingestion",
                partial(
                    launch.ingest_rectangle,
                    instance,
                    rectangle.first_window,
                    rectangle.last_window,
                    rectangle.series_keys,
                    show_steps=show_steps,
                ),
            )
            run_ids.append(result.run_id)
            try:
                require_success(result, "ingestion")
            except PipelineRunError as exc:
                failure = failure or exc
            tracker.advance(
                1,
                f"windows {rectangle.first_window}..{rectangle.last_window} × "
                f"{len(rectangle.series_keys)} series" + ("" if result.success else " FAILED"),
                "ok" if result.success else "fail",
            )
    finally:
        tracker.finish()
    # Accepted cells (even beside a rectangle stopped by a failed check) version their windows.
    versioned, latest = _version_pending_history(instance, database, windows, run_ids, tracker)
    if failure is not None:
        raise failure
    return IngestSummary(batch, run_ids, versioned, latest, time.perf_counter() - started)


def _version_pending_history(
    instance: DagsterInstance,
    database: DatabaseResource,
    windows: list[str],
    run_ids: list[str],
    tracker: Tracker,
) -> tuple[list[str], str | None]:
    """Version every window from the earliest one with accepted changes to the latest.

    The pending marks are written by the runs that accepted the changes and cleared only after
    every window is versioned, so an ingest killed in between is completed by the next one.
    """
    from forecasting_pipeline.automation import launch

    with database.transaction() as conn:
        pending_from = earliest_pending_history(conn)
    latest = _latest_window_or_none(database)
    if pending_from is None or latest is None:
        return [], latest
    versioned = [w for w in windows if pending_from <= w <= latest]
    tracker.start(len(versioned), "history versions", "windows")
    try:
        for window in versioned:
            result = _execute(
                instance,
                f"history version of window {window}",
                partial(launch.version_history, instance, window),
            )
            require_success(result, f"history version of window {window}")
            run_ids.append(result.run_id)
            tracker.advance(1, f"window {window}")
    finally:
        tracker.finish()
    with database.transaction() as conn:
        clear_pending_history(conn, latest)
    return versioned, latest


def _op_config(**configs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    ops = {name: {"config": dict(config)} for name, config in configs.items() if config}
    return {"ops": ops} if ops else None


def _backtest_like_training(
    global_model_config: Mapping[str, Any] | None, backtest_config: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """A backtest scores the configuration that forecasts: neural settings given for training
    (steps, lookback, batch size, seed, deadline) apply to the backtest unless it names its own."""
    inherited = {k: v for k, v in (global_model_config or {}).items() if k != "families"}
    merged = {**inherited, **(backtest_config or {})}
    return merged or None


class _StepFollower:
    """Counts the steps of the next run this process executes, on a tracker, as they finish.

    `execute_in_process` calls nobody back while its run works, so a thread reads the run's
    step events from the instance once a second (each step counts once: a set of finished
    keys), and the finished run's own events settle the count, so a run shorter than a poll is
    counted too. The run is found as the one new run tagged with this process's launcher tags.
    """

    POLL_SECONDS = 1.0

    def __init__(self, instance: DagsterInstance, tracker: Tracker, label: str) -> None:
        from dagster import DagsterEventType, RunsFilter

        from forecasting_pipeline.automation.recovery import launcher_tags

        self._instance = instance
        self._tracker = tracker
        self._label = label
        self._filter = RunsFilter(tags=launcher_tags())
        self._kinds = {
            DagsterEventType.STEP_SUCCESS,
            DagsterEventType.STEP_FAILURE,
            DagsterEventType.STEP_SKIPPED,
        }
        self._earlier = set(instance.get_run_ids(self._filter))
        self._run_id: str | None = None
        self._cursor: str | None = None
        self._finished: set[str] = set()
        self._failed: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="step-progress", daemon=True)
        self._started = time.perf_counter()

    def __enter__(self) -> _StepFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc_info[0] is not None:
            self._tracker.finish("stopped")

    def _poll(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
            try:
                self._read_events()
            except Exception:  # noqa: S112 - a progress display must never stop the run it shows
                continue

    def _begin(self, run_id: str) -> None:
        """Start the count at the run's planned steps (from its execution plan snapshot)."""
        run = self._instance.get_run_by_id(run_id)
        plan_id = run.execution_plan_snapshot_id if run else None
        steps = self._instance.get_execution_plan_snapshot(plan_id).step_keys_to_execute if plan_id else []
        with self._lock:
            if self._run_id is None:
                self._run_id = run_id
                self._tracker.start(len(steps), self._label, "steps")

    def _read_events(self) -> None:
        if self._run_id is None:
            new = [r for r in self._instance.get_run_ids(self._filter, limit=5) if r not in self._earlier]
            if not new:
                return
            self._begin(new[0])
        assert self._run_id is not None
        connection = self._instance.get_records_for_run(self._run_id, self._cursor, of_type=self._kinds)
        self._cursor = connection.cursor
        for record in connection.records:
            event = record.event_log_entry.dagster_event
            if event is not None and event.step_key:
                self._step_finished(event.step_key, event.is_step_success, event.is_step_failure)

    def _step_finished(self, step_key: str, succeeded: bool, failed: bool) -> None:
        with self._lock:
            if step_key in self._finished:
                return
            self._finished.add(step_key)
            if failed:
                self._failed.append(step_key)
            detail = step_key if succeeded else f"{step_key} {'FAILED' if failed else 'skipped'}"
            self._tracker.advance(1, detail, "ok" if succeeded else "fail" if failed else "warn")

    def settle(self, result: ExecuteInProcessResult) -> None:
        """Count what the poller missed from the run's own events, then close the count."""
        self._stop.set()
        self._thread.join()
        if self._run_id is None:
            self._begin(result.run_id)
        for event in result.all_events:
            if event.step_key and (event.is_step_success or event.is_step_failure or event.is_step_skipped):
                self._step_finished(event.step_key, event.is_step_success, event.is_step_failure)
        seconds = time.perf_counter() - self._started
        failed = f"; failed: {', '.join(self._failed)}" if self._failed else ""
        self._tracker.finish(
            f"run {result.run_id[:8]} {'succeeded' if result.success else 'failed'} in {seconds:.1f}s{failed}"
        )


def _execute(
    instance: DagsterInstance,
    what: str,
    run: Callable[[], ExecuteInProcessResult],
    progress: Progress | Tracker | None = None,
) -> ExecuteInProcessResult:
    """Every in-process run of the CLI goes through here: `run()`, its steps counted on
    `progress` as they finish (no thread without one), and a Ctrl-C during it stops the command
    (PipelineInterruptedError) instead of being lost or read as a failed step."""
    with _InterruptWatch() as interrupts:
        if progress is None:
            result = run()
        else:
            with _StepFollower(instance, _tracker(progress), what) as follower:
                result = run()
                follower.settle(result)
        if interrupts.seen():
            raise PipelineInterruptedError(f"{what}: interrupted (Dagster run {result.run_id})")
    _stop_if_interrupted(result, what)
    return result


STUDY_ASSETS = ("feature_table", "correlation_study", "granger_study", "training_panel", "feature_effects")


def forecast(
    instance: DagsterInstance,
    window: str,
    series_keys: list[str],
    *,
    global_model_config: Mapping[str, Any] | None = None,
    search_config: Mapping[str, Any] | None = None,
    local_model_config: Mapping[str, Any] | None = None,
    backtest_config: Mapping[str, Any] | None = None,
    selection_config: Mapping[str, Any] | None = None,
    study_configs: Mapping[str, Mapping[str, Any]] | None = None,
    show_steps: bool = False,
    progress: Progress | Tracker | None = None,
) -> ForecastSummary:
    """Study the drivers, tune and train the window's families, backtest, select champions,
    publish, and measure which features explain the champions' errors.

    The studies run first because their verdict decides which drivers the models take. A
    failed study does not stop forecasting (the models then keep the drivers the last decision
    gave them, or all of them); in the training run the local families do not depend on the
    neural ones, so they forecast even when neural training failed. Every failure is raised at
    the end. The configs override fields of `GlobalModelConfig`, `SearchConfig`,
    `LocalModelConfig`, `BacktestConfig` and `SelectionConfig`; `study_configs` maps an asset of
    STUDY_ASSETS to its config (`training_panel` takes the driver rule). With `progress`, each
    run's steps are counted on it as they finish.
    """
    from forecasting_pipeline.automation import launch

    studies = dict(study_configs or {})
    unknown = sorted(set(studies) - set(STUDY_ASSETS))
    if unknown:
        raise ValueError(f"study configs for unknown assets {unknown}; known: {', '.join(STUDY_ASSETS)}")
    started = time.perf_counter()
    correlated = _execute(
        instance,
        f"correlation study of window {window}",
        lambda: launch.study_correlations(
            instance,
            window,
            run_config=_op_config(correlation_study=studies.get("correlation_study")),
            show_steps=show_steps,
        ),
        progress,
    )
    studied = _execute(
        instance,
        f"features and Granger study of window {window}",
        lambda: launch.study_series(
            instance,
            window,
            series_keys,
            run_config=_op_config(
                feature_table=studies.get("feature_table"), granger_study=studies.get("granger_study")
            ),
            show_steps=show_steps,
        ),
        progress,
    )
    trained = _execute(
        instance,
        f"tuning and training for window {window}",
        lambda: launch.train_window(
            instance,
            window,
            run_config=_op_config(
                training_panel=studies.get("training_panel"),
                global_models=global_model_config,
                hyperparameter_search=search_config,
                local_models=local_model_config,
            ),
            show_steps=show_steps,
        ),
        progress,
    )
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    forecasted = _execute(
        instance,
        f"backtests, selection and publication for window {window}",
        lambda: launch.forecast_window(
            instance,
            window,
            series_keys,
            run_config=_op_config(
                backtest_folds=_backtest_like_training(global_model_config, backtest_config),
                model_selection=selection_config,
            ),
            show_steps=show_steps,
        ),
        progress,
    )
    explained = _execute(
        instance,
        f"feature effects of window {window}",
        lambda: launch.measure_feature_effects(
            instance,
            window,
            run_config=_op_config(feature_effects=studies.get("feature_effects")),
            show_steps=show_steps,
        ),
        progress,
    )
    require_success(correlated, f"correlation study of window {window}")
    require_success(studied, f"features and Granger study of window {window}")
    require_success(trained, f"training for window {window}")
    require_success(forecasted, f"forecasting for window {window}")
    require_success(explained, f"feature effects of window {window}")
    return ForecastSummary(
        window,
        trained.run_id,
        forecasted.run_id,
        train_seconds,
        time.perf_counter() - started,
        series_keys,
    )


@dataclass(frozen=True)
class PresetRun:
    """Run configs of a preset, with the deadline its time budget sets."""

    name: str
    deadline: float
    configs: dict[str, dict[str, Any]]


def preset_run(preset_name: str, started: float, catalog_path: str | None = None) -> PresetRun:
    """The op configs of `forecast` for a catalog preset (families, trials, folds, budget).

    Tuning may use 30 % of the budget, split over the tuned families; neural training and
    backtests skip a family that would start after the deadline.
    """
    from forecasting_pipeline.modeling.catalog import load_catalog

    catalog = load_catalog(catalog_path)
    preset = catalog.preset(preset_name)
    names = catalog.preset_families(preset)
    budget = preset.time_budget_minutes * 60
    deadline = started + budget
    neural = [s.name for s in catalog.neural(names)]
    local = [s.name for s in catalog.local(names)]
    tuned = [n for n in names if catalog.family(n).search_space]
    return PresetRun(
        preset_name,
        deadline,
        {
            "global_model_config": {"families": neural, "max_steps": preset.max_steps, "deadline": deadline},
            "local_model_config": {"families": local},
            "search_config": {
                "families": tuned,
                "trials": preset.trials,
                "timeout_seconds": max(1.0, 0.3 * budget / max(1, len(tuned))),
            },
            "backtest_config": {
                "families": names,
                "max_steps": preset.max_steps,
                "n_windows": preset.n_windows,
                "ensembles": preset.ensembles,
                "deadline": deadline,
            },
        },
    )


def restore_champions(
    database: DatabaseResource, series_ids: Sequence[str] | None, to_model: str | None, reason: str
) -> list[dict]:
    """Bring back each series' previous champion (or `to_model`) and republish its forecast.

    Returns the restore events. The MLflow `champion` alias moves to the restored versions.
    """
    from dagster import build_resources

    from forecasting_pipeline.assets.forecast import point_champion_aliases
    from forecasting_pipeline.definitions import defs
    from forecasting_pipeline.storage.champions import (
        champion_registry_versions,
        newest_published_windows,
        publish_champions,
        restore_previous,
    )

    with database.transaction() as conn:
        events = restore_previous(conn, series_ids, reason, to_model)
        restored = [e["series_id"] for e in events]
        registered: list[dict] = []
        if restored:
            windows = newest_published_windows(conn, restored)
            publish_champions(conn, windows, restored, run_id="cli-restore")
            registered = champion_registry_versions(conn, windows, restored)
    if registered:
        with build_resources({"mlflow_tracker": defs.resources["mlflow_tracker"]}) as resources:
            point_champion_aliases(resources.mlflow_tracker, registered)
    return events


# What a window backfill recomputes when no asset is named: everything downstream of ingestion.
BACKFILL_DEFAULT_ASSETS = (
    "observation_history",
    "feature_table",
    "correlation_study",
    "granger_study",
    "training_panel",
    "hyperparameter_search",
    "global_models",
    "local_models",
    "backtest_folds",
    "model_selection",
    "predictions",
    "feature_effects",
    "forecast_accuracy",
)


@dataclass(frozen=True)
class BackfillSummary:
    runs: list[tuple[str, str, str, str]]  # job, first key, last key, run id (in-process)
    backfill_id: str | None  # submitted to the daemon


def backfill(
    instance: DagsterInstance,
    first_window: str,
    last_window: str,
    assets: Sequence[str] | None = None,
    *,
    submit: bool = False,
    progress: Progress | Tracker = print,
) -> BackfillSummary:
    """Recompute `assets` for every series over windows first..last, as few runs as possible.

    `submit` hands the same selection to the daemon as an asset backfill (what the UI's
    "Materialize" over a range submits); otherwise it runs here, one partition-range run per job,
    counted on `progress` as each finishes.
    """
    import uuid

    from forecasting_pipeline.automation import launch
    from forecasting_pipeline.automation.backfills import backfill_plan, submit_backfill, window_range_subset
    from forecasting_pipeline.storage.automation import AutomationRequest

    tracker = _tracker(progress)
    chosen = list(assets or BACKFILL_DEFAULT_ASSETS)
    keys = list(instance.get_dynamic_partitions(SERIES_DIMENSION))
    if submit:
        reason = f"backfill of {len(chosen)} assets over windows {first_window}..{last_window} from the CLI"
        request = AutomationRequest(f"cli-{uuid.uuid4().hex[:16]}", "backfill", reason, [], [])
        submit_backfill(
            instance, request, window_range_subset(chosen, first_window, last_window, keys), "cli"
        )
        tracker(
            f"submitted asset backfill {request.request_id}; the daemon runs it (see Overview → Backfills)"
        )
        return BackfillSummary([], request.request_id)
    plan = list(backfill_plan(chosen, first_window, last_window, keys))
    runs = []
    tracker.start(len(plan), f"backfill {first_window}..{last_window}", "runs")
    try:
        for job_name, selected, start, end in plan:
            tracker(f"{job_name}: {', '.join(selected)} over {start}..{end}")
            result = _execute(
                instance,
                f"backfill run of {job_name}",
                partial(launch.run_partition_range, job_name, instance, start, end, assets=selected),
            )
            tracker.advance(
                1,
                f"{job_name} {start}..{end}: run {result.run_id[:8]} "
                + ("succeeded" if result.success else "FAILED"),
                "ok" if result.success else "fail",
            )
            require_success(result, f"backfill run of {job_name}")
            runs.append((job_name, start, end, result.run_id))
    finally:
        tracker.finish()
    return BackfillSummary(runs, None)
