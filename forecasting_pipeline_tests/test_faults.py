"""Fault tests: a run killed mid-training, PostgreSQL gone mid-run, two overlapping runs at once,
and storage that cannot be written. Each counts every `forecasting.*` table before and after.

What they hold the pipeline to: a fault leaves no partial or duplicated rows anywhere, what the
killed run left open (its Dagster run, gpu slot, MLflow run, Optuna trial) is closed by the next
command, the failure reads as what happened, and running the same thing again succeeds.
Run with `pytest -m faults`; CI runs them as their own step.
"""

from __future__ import annotations

import getpass
import hashlib
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, ExecuteInProcessResult, RunsFilter
from sqlalchemy import create_engine, text

from forecasting_pipeline.assets.conventions import GPU_POOL
from forecasting_pipeline.automation import launch
from forecasting_pipeline.automation.jobs import train_job
from forecasting_pipeline.automation.recovery import PID_TAG, fail_orphaned_runs
from forecasting_pipeline.operations import root_cause
from forecasting_pipeline_tests.cli_runs import user_env
from forecasting_pipeline_tests.conftest import (
    TINY_BACKTEST,
    TINY_GLOBAL_MODEL,
    land_and_ingest,
    query_frame,
    scalar,
    series_keys,
)
from forecasting_pipeline_tests.table_state import (
    count_changes,
    duplicate_keys,
    rows_naming_run,
    table_counts,
)

pytestmark = pytest.mark.faults

WINDOW = "2016-10-30"
NEURAL = "NHITS"
STUDY = f"{NEURAL}/hourly/{WINDOW}"  # the window's one neural study (both series are hourly)
# Endless for the test's purposes: the process is killed long before it would end.
ENDLESS_STEPS = 1_000_000
ONLY_SEASONAL_NAIVE = {"families": ["SeasonalNaive"]}
NO_SEARCH: dict[str, Any] = {"families": []}
# What a run's `training_panel` step writes: a killed run whose panel step finished names itself
# in these (complete, replaced) rows and nowhere else.
PANEL_STEP_TABLES = {"runs", "driver_selection", "forecast_exclusions"}
# Tables a finished run writes by replacing its window's rows: the same count after any re-run.
WINDOW_STATE_TABLES = (
    "predictions",
    "published_forecasts",
    "backtest_folds",
    "backtest_metrics",
    "interval_calibration",
    "selection_decisions",
    "ensemble_members",
    "series_scales",
    "driver_selection",
    "forecast_exclusions",
    "experiments",
)


# What a `publish_forecasts` run writes: the window tables above plus its lineage, the models
# rows of its ensembles, their costs and metrics, and champion events.
PUBLISH_TABLES = (set(WINDOW_STATE_TABLES) - {"driver_selection", "forecast_exclusions", "experiments"}) | {
    "runs",
    "models",
    "metrics",
    "resource_stats",
    "champion_events",
}


def _ops(**configs: dict[str, Any]) -> dict[str, Any]:
    return {"ops": {name: {"config": config} for name, config in configs.items()}}


def _train(
    instance: DagsterInstance, *, assets: list[str] | None = None, **configs: dict[str, Any]
) -> ExecuteInProcessResult:
    """One in-process run of `train_models` (or of `assets` of it) for WINDOW, as the CLI runs it."""
    return launch.run_partition_range(
        train_job.name, instance, WINDOW, WINDOW, run_config=_ops(**configs), assets=assets
    )


def _train_tiny(instance: DagsterInstance) -> ExecuteInProcessResult:
    """The window's training at test size: tiny NHITS and SeasonalNaive, no tuning."""
    return _train(
        instance,
        hyperparameter_search=NO_SEARCH,
        global_models=TINY_GLOBAL_MODEL,
        local_models=ONLY_SEASONAL_NAIVE,
    )


def _script(body: str) -> str:
    """A child process's program: the same deployment as the test (inherited environment)."""
    return "from dagster import DagsterInstance\nfrom forecasting_pipeline.automation import launch\n" + (
        textwrap.dedent(body)
    )


def _train_script(assets: list[str] | None, **configs: dict[str, Any]) -> str:
    return _script(
        f"""
        launch.run_partition_range({train_job.name!r}, DagsterInstance.get(), {WINDOW!r}, {WINDOW!r},
                                   run_config={_ops(**configs)!r}, assets={assets!r})
        """
    )


def _kill_when(
    instance: DagsterInstance, script: str, ready: Callable[[], bool], timeout: float = 240
) -> str:
    """Start `script` in a child process, SIGKILL it once `ready()` holds; return its run's id.

    SIGKILL, not SIGTERM: nothing in the child gets to clean up, as after the OOM killer or a
    lost host.
    """
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert child.poll() is None, f"the child ended (exit {child.returncode}) before the fault point"
            assert time.monotonic() < deadline, "the child never reached the fault point"
            time.sleep(0.3)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    (record,) = instance.get_run_records(
        RunsFilter(tags={PID_TAG: str(child.pid)}, statuses=[DagsterRunStatus.STARTED])
    )
    return record.dagster_run.run_id


def _gpu_slot_holders(instance: DagsterInstance) -> set[str]:
    return instance.event_log_storage.get_concurrency_info(GPU_POOL).active_run_ids


def _study_trials(storage: Any) -> list[Any]:
    """The trials of STUDY as Optuna stores them (RDBStorage reads the database on each call)."""
    try:
        return storage.get_all_trials(storage.get_study_id_from_name(STUDY), deepcopy=False)
    except KeyError:
        return []


def _mlflow_client(deployment: Any) -> Any:
    from mlflow import MlflowClient

    uri = deployment.settings.default_mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _mlflow_runs(client: Any, status: str | None = None) -> list[Any]:
    experiment = client.get_experiment_by_name("forecasting-pipeline")
    if experiment is None:
        return []
    where = f"attributes.status = '{status}'" if status else ""
    return client.search_runs([experiment.experiment_id], filter_string=where, max_results=10_000)


def _materialized(instance: DagsterInstance, run_id: str) -> set[str]:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    return {record.event_log_entry.dagster_event.asset_key.to_user_string() for record in records}


def _failure_messages(result: ExecuteInProcessResult) -> dict[str, str]:
    return {
        event.step_key: root_cause(event.step_failure_data.error)
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error
    }


@pytest.fixture(scope="module")
def studied(deployment, instance, db_engine) -> dict[str, int]:
    """The bundled data ingested and the window's drivers studied; the table counts right after
    a clean ingest, which the PostgreSQL test's private deployment must end up with too."""
    land_and_ingest(deployment, instance)
    ingest_counts = table_counts(db_engine)
    assert launch.study_correlations(instance, WINDOW).success
    assert launch.study_series(instance, WINDOW, series_keys(instance)).success
    return ingest_counts


@pytest.fixture(scope="module")
def trained(studied, instance) -> str:
    """One clean training run of the window (tiny NHITS and SeasonalNaive, no tuning)."""
    result = _train_tiny(instance)
    assert result.success, _failure_messages(result)
    return result.run_id


def test_a_run_killed_mid_trial_is_failed_and_its_study_resumes_to_exactly_its_budget(
    studied, instance, deployment, db_engine
):
    from forecasting_pipeline.modeling.search import optuna_storage

    storage = optuna_storage(deployment.database_url)
    tiny_search = {"families": [NEURAL], "trial_max_steps": 5, "seed": 7}
    first = _train(
        instance,
        assets=["training_panel", "hyperparameter_search"],
        hyperparameter_search={**tiny_search, "trials": 1},
    )
    assert first.success, _failure_messages(first)
    (completed,) = _study_trials(storage)
    before = table_counts(db_engine)

    # The budget grows to two trials; the second trains for ever and is killed mid-training.
    def second_trial_training() -> bool:
        return any(t.state.name == "RUNNING" and "run_tag" in t.user_attrs for t in _study_trials(storage))

    script = _train_script(
        ["training_panel", "hyperparameter_search"],
        hyperparameter_search={**tiny_search, "trials": 2, "trial_max_steps": ENDLESS_STEPS},
    )
    killed = _kill_when(instance, script, second_trial_training)

    # Nothing of the study step reached the domain tables: only the killed run's lineage row
    # (its panel step finished and replaced the window's driver selection with equal rows).
    assert count_changes(before, table_counts(db_engine)) == {"runs": 1}
    assert set(rows_naming_run(db_engine, killed)) <= PANEL_STEP_TABLES
    assert instance.get_run_by_id(killed).status == DagsterRunStatus.STARTED
    assert killed in _gpu_slot_holders(instance)

    assert fail_orphaned_runs(instance) == [killed]
    assert instance.get_run_by_id(killed).status == DagsterRunStatus.FAILURE
    assert killed not in _gpu_slot_holders(instance)
    interrupted = [t for t in _study_trials(storage) if t.user_attrs.get("run_tag") == killed]
    assert [(t.state.name, t.user_attrs.get("interrupted")) for t in interrupted] == [("FAIL", True)]
    assert fail_orphaned_runs(instance) == []

    rerun = _train(
        instance,
        assets=["training_panel", "hyperparameter_search"],
        hyperparameter_search={**tiny_search, "trials": 2},
    )
    assert rerun.success, _failure_messages(rerun)
    trials = _study_trials(storage)
    # The completed trial is kept, the interrupted one does not count, one more ran: exactly 2.
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert (trials[0].number, trials[0].params, trials[0].value) == (
        completed.number,
        completed.params,
        completed.value,
    )
    experiment = query_frame(
        db_engine, "SELECT * FROM forecasting.experiments WHERE study_name = :s", s=STUDY
    ).iloc[0]
    assert (experiment["trial_budget"], experiment["finished_trials"]) == (2, 2)
    assert experiment["dagster_run_id"] == rerun.run_id
    # The re-run added its lineage row and the cost of its one trial, beside the killed run's row.
    assert count_changes(before, table_counts(db_engine)) == {"runs": 2, "resource_stats": 1}
    assert duplicate_keys(db_engine) == {}


def test_a_run_killed_mid_training_fails_its_mlflow_run_and_reruns_to_the_same_tables(
    trained, instance, deployment, db_engine
):
    client = _mlflow_client(deployment)
    finished_before = {run.info.run_id for run in _mlflow_runs(client, "FINISHED")}
    before = table_counts(db_engine)

    def training_tracked() -> bool:
        return bool(_mlflow_runs(client, "RUNNING"))

    script = _train_script(
        None,
        hyperparameter_search=NO_SEARCH,
        global_models={**TINY_GLOBAL_MODEL, "max_steps": ENDLESS_STEPS},
        local_models=ONLY_SEASONAL_NAIVE,
    )
    killed = _kill_when(instance, script, training_tracked)

    (open_run,) = _mlflow_runs(client, "RUNNING")
    assert open_run.data.tags["dagster_run_id"] == killed
    assert open_run.data.params["max_steps"] == str(ENDLESS_STEPS)
    # The killed run stored nothing of its trainings: no model, forecast, metric or cost rows,
    # and no registry version of the unfinished MLflow run.
    assert set(rows_naming_run(db_engine, killed)) <= PANEL_STEP_TABLES
    assert not client.search_model_versions(f"run_id = '{open_run.info.run_id}'")
    assert count_changes(before, table_counts(db_engine)) == {"runs": 1}

    assert fail_orphaned_runs(instance) == [killed]
    assert client.get_run(open_run.info.run_id).info.status == "FAILED"
    assert _mlflow_runs(client, "RUNNING") == []
    assert _gpu_slot_holders(instance) == set()

    rerun = _train_tiny(instance)
    assert rerun.success, _failure_messages(rerun)
    # Exactly what a clean re-run adds: a new version of both families (NHITS with its loss
    # metric), their costs and the lineage rows of both runs; every forecast replaced in place.
    assert count_changes(before, table_counts(db_engine)) == {
        "metrics": 1,
        "models": 2,
        "resource_stats": 2,
        "runs": 2,
    }
    window_forecasts = scalar(
        db_engine, "SELECT count(*) FROM forecasting.predictions WHERE window_key = :w", w=WINDOW
    )
    written = rows_naming_run(db_engine, rerun.run_id)
    assert {t: written.get(t) for t in ("models", "metrics", "resource_stats", "predictions")} == {
        "models": 2,
        "metrics": 1,
        "resource_stats": 2,
        "predictions": window_forecasts,
    }
    finished = {run.info.run_id for run in _mlflow_runs(client, "FINISHED")} - finished_before
    assert len(finished) == 2  # the re-run's NHITS and SeasonalNaive runs
    assert duplicate_keys(db_engine) == {}


def _runs_behind(engine: Any, name: str) -> dict[str, set[str]]:
    """Per series, the runs whose rows table `name` holds for WINDOW."""
    from sqlalchemy import column, select, table

    rows = (
        select(column("series_id"), column("dagster_run_id"))
        .select_from(table(name, schema="forecasting"))
        .where(column("window_key") == WINDOW)
    )
    behind: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for series, run_id in conn.execute(rows):
            behind.setdefault(series, set()).add(run_id)
    return behind


def test_two_concurrent_runs_over_overlapping_partitions_leave_one_consistent_result(
    trained, instance, db_engine
):
    keys = series_keys(instance)
    assert len(keys) == 2
    config = _ops(backtest_folds=TINY_BACKTEST)
    before = table_counts(db_engine)

    def publish(series: list[str]) -> str:
        return _script(
            f"""
            result = launch.forecast_window(DagsterInstance.get(), {WINDOW!r}, {series!r},
                                            run_config={config!r})
            raise SystemExit(0 if result.success else 1)
            """
        )

    # Both series in one run, one of them again in the other, started together.
    children = [subprocess.Popen([sys.executable, "-c", publish(chosen)]) for chosen in (keys, keys[1:])]
    assert [child.wait(timeout=400) for child in children] == [0, 0]
    concurrent = table_counts(db_engine)
    changed = count_changes(before, concurrent)
    assert set(changed) <= PUBLISH_TABLES and changed["runs"] == 2, changed

    # Serializable: each series' folds, decision and published forecast are all one run's, as
    # if the runs had gone one after the other, never one run's decision on the other's folds.
    decided = _runs_behind(db_engine, "selection_decisions")
    assert set(decided) == set(keys) and all(len(runs) == 1 for runs in decided.values())
    assert _runs_behind(db_engine, "backtest_folds") == decided
    assert _runs_behind(db_engine, "published_forecasts") == decided
    horizon = scalar(db_engine, "SELECT max(step) FROM forecasting.published_forecasts")
    published = query_frame(
        db_engine,
        "SELECT series_id, count(*) AS steps, count(DISTINCT model_version) AS versions "
        "FROM forecasting.published_forecasts WHERE window_key = :w GROUP BY series_id",
        w=WINDOW,
    )
    assert published[["steps", "versions"]].to_dict("list") == {"steps": [horizon] * 2, "versions": [1, 1]}
    # Champion events chain: each names the champion the one before it made, none is lost or
    # repeated, and the last is what the decision in place chose.
    events = query_frame(
        db_engine,
        "SELECT series_id, model_name, previous_model FROM forecasting.champion_events ORDER BY event_id",
    )
    for series, chain in events.groupby("series_id"):
        previous = [m if isinstance(m, str) else None for m in chain["previous_model"]]
        assert previous == [None, *chain["model_name"].iloc[:-1]], chain
        decision = query_frame(
            db_engine,
            "SELECT decision, champion, challenger FROM forecasting.selection_decisions "
            "WHERE series_id = :s AND window_key = :w",
            s=series,
            w=WINDOW,
        ).iloc[0]
        chosen = decision["champion"] if decision["decision"] == "keep" else decision["challenger"]
        assert chain["model_name"].iloc[-1] == chosen
    assert duplicate_keys(db_engine) == {}

    # One run alone afterwards re-writes the same window rows: no table of the window grows.
    again = launch.forecast_window(instance, WINDOW, keys, run_config=config)
    assert again.success, _failure_messages(again)
    after = table_counts(db_engine)
    assert {t: after[t] for t in WINDOW_STATE_TABLES} == {t: concurrent[t] for t in WINDOW_STATE_TABLES}
    # What it adds is its own lineage, ensemble versions and costs (and a champion event if the
    # re-run's choice differs from the concurrent runs' last).
    changed = count_changes(concurrent, after)
    assert set(changed) <= PUBLISH_TABLES - set(WINDOW_STATE_TABLES) and changed["runs"] == 1, changed
    assert duplicate_keys(db_engine) == {}


@pytest.fixture
def panel_file(studied, instance, deployment) -> Path:
    """The window's stored training panel (materialized first if no earlier test did)."""
    path = deployment.settings.storage_dir / "training_panel" / f"{WINDOW}.parquet"
    if not path.exists():
        assert _train(instance, assets=["training_panel"]).success
    return path


def _assert_storage_failure_is_clean(
    result: ExecuteInProcessResult, instance: DagsterInstance, folder: Path, words: str
) -> None:
    assert not result.success
    message = _failure_messages(result)["training_panel"]
    assert "training_panel" in message and words in message and "did not materialize" in message
    assert _materialized(instance, result.run_id) == set()
    # No temporary file is left for anything to mistake for output.
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".parquet")] == []


def test_a_storage_folder_that_is_a_file_fails_clearly_and_the_rerun_stores_the_panel(
    panel_file, instance, db_engine
):
    folder = panel_file.parent
    aside = folder.with_name("training_panel.aside")
    before = table_counts(db_engine)
    folder.rename(aside)
    folder.write_text("not a folder")
    try:
        failed = _train(instance, assets=["training_panel", "hyperparameter_search"])
        assert not failed.success
        message = _failure_messages(failed)["training_panel"]
        assert f"{folder} is a file, not a folder" in message and "did not materialize" in message
        assert _materialized(instance, failed.run_id) == set()
        # The study step never ran on a panel that was not stored.
        assert "hyperparameter_search" not in _failure_messages(failed)
        assert count_changes(before, table_counts(db_engine)) == {"runs": 1}
    finally:
        folder.unlink()
        aside.rename(folder)

    rerun = _train(instance, assets=["training_panel"])
    assert rerun.success, _failure_messages(rerun)
    assert _materialized(instance, rerun.run_id) == {"training_panel"}
    assert count_changes(before, table_counts(db_engine)) == {"runs": 2}


def _can_mount() -> bool:
    probe = Path(tempfile.mkdtemp(prefix="fp-mount-probe-"))
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
        )
        if mounted.returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    finally:
        probe.rmdir()


@contextmanager
def _small_volume(folder: Path, size: int) -> Iterator[Callable[[int], None]]:
    """`folder` on a tmpfs of `size` bytes holding its current files; yields a function that
    resizes the volume. On exit the files are copied back onto the real folder."""
    keep = Path(tempfile.mkdtemp(prefix="fp-full-disk-"))
    shutil.copytree(folder, keep, dirs_exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        shutil.copytree(keep, folder, dirs_exist_ok=True)

        def resize(new_size: int) -> None:
            subprocess.run(["mount", "-o", f"remount,size={new_size}", str(folder)], check=True)

        yield resize
        shutil.rmtree(keep)
        shutil.copytree(folder, keep)
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    shutil.copytree(keep, folder, dirs_exist_ok=True)
    shutil.rmtree(keep)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_full_disk_fails_clearly_keeps_the_stored_panel_whole_and_the_rerun_succeeds(
    panel_file, instance, db_engine
):
    if not _can_mount():
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); CI runs as root")
    stored = _digest(panel_file)
    size = panel_file.stat().st_size
    assert size > 16 * 1024, "the panel must be big enough for a volume with room for half of it"
    before = table_counts(db_engine)
    # Room for the stored panel and half as much again, not for a second copy of it.
    with _small_volume(panel_file.parent, size + size // 2) as resize:
        failed = _train(instance, assets=["training_panel"])
        _assert_storage_failure_is_clean(failed, instance, panel_file.parent, "No space left on device")
        # The last good panel is untouched; what the failed run computed was never half-written.
        assert _digest(panel_file) == stored
        assert count_changes(before, table_counts(db_engine)) == {"runs": 1}

        resize(4 * size + 1024 * 1024)
        rerun = _train(instance, assets=["training_panel"])
        assert rerun.success, _failure_messages(rerun)
        assert _materialized(instance, rerun.run_id) == {"training_panel"}
        assert pl.read_parquet(panel_file).height == scalar(
            db_engine, "SELECT count(*) FROM forecasting.observations WHERE window_key <= :w", w=WINDOW
        )
    assert count_changes(before, table_counts(db_engine)) == {"runs": 2}


# --- PostgreSQL stopped mid-run ---------------------------------------------------------------


def _pg_ctl(data_dir: Path, *args: str) -> None:
    """`pg_ctl` on the private server, as the system user that owns its folder (pgserver runs the
    server as its own user when the tests run as root)."""
    import shlex

    import pgserver._commands as commands

    command = [str(Path(commands.POSTGRES_BIN_PATH) / "pg_ctl"), "-D", str(data_dir), "-w", *args]
    owner = data_dir.owner()
    if owner != getpass.getuser():
        command = ["su", owner, "-s", "/bin/sh", "-c", shlex.join(command)]
    # Output to files, never to a pipe: the server it starts would hold a pipe open for ever.
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def private_server() -> Iterator[tuple[str, Path]]:
    """A PostgreSQL of the test's own, which it may stop: never the shared server at :5432."""
    from forecasting_pipeline.storage.embedded import start_embedded_server, stop_embedded_server
    from forecasting_pipeline_tests.conftest import _scratch_dir

    data_dir = _scratch_dir("fp-faults-pg-") / "pgdata"
    url = start_embedded_server(data_dir)
    try:
        yield url, data_dir
    finally:
        stop_embedded_server(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def _start(data_dir: Path, url: str) -> None:
    """Start the stopped private server again on the same socket folder."""
    from sqlalchemy.engine import make_url

    socket_dir = make_url(url).query["host"]
    _pg_ctl(data_dir, "-l", str(data_dir / "log"), "-o", f"-h '' -k {socket_dir}", "start")


def test_postgresql_stopped_mid_run_fails_the_command_clearly_and_a_retry_completes_the_ingest(
    studied, private_server
):
    from forecasting_pipeline.datasets import EPF_FR_BE, land_bundled_dataset
    from forecasting_pipeline.storage.embedded import stop_embedded_server
    from forecasting_pipeline_tests.conftest import _scratch_dir

    url, data_dir = private_server
    home = _scratch_dir("fp-faults-home-")
    env = user_env(home, url)
    land_bundled_dataset(EPF_FR_BE.name, home / "landing")
    engine = create_engine(url, pool_pre_ping=True)
    command = [sys.executable, "-m", "forecasting_pipeline.cli", "ingest"]
    try:
        ingest = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def accepting_rows() -> bool:
            with engine.connect() as conn:
                return bool(
                    conn.execute(
                        text(
                            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'STEP_START' "
                            "AND step_key = 'raw_observations'"
                        )
                    ).scalar_one()
                )

        deadline = time.monotonic() + 180
        while not _tables_exist(engine) or not accepting_rows():
            assert ingest.poll() is None, ingest.communicate()
            assert time.monotonic() < deadline, "the ingest never started its run"
            time.sleep(0.2)
        engine.dispose()
        stop_embedded_server(data_dir)
        out, err = ingest.communicate(timeout=300)

        # One clear line, under the documented exit code, and no traceback.
        assert ingest.returncode == 5, out + err
        assert "error: database unreachable:" in err and "Traceback" not in err, err

        _start(data_dir, url)
        interrupted = table_counts(engine)
        with engine.connect() as conn:
            (status,) = conn.execute(text("SELECT status FROM forecasting.landed_files")).scalars()
        # Nothing half-done passes for done: the file's rows were accepted all at once (one
        # transaction: staged rows consumed, file marked ingested) or not at all (still staged).
        rows = studied["observations"]
        state = (interrupted["observations"], interrupted["staged_observations"], status)
        assert state in {(0, rows, "staged"), (rows, 0, "ingested")}, state

        retry = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert retry.returncode == 0, retry.stdout + retry.stderr
        assert "was killed before it finished: marked failed" in retry.stdout

        counts = table_counts(engine)
        # The same rows as an ingest that nothing interrupted, in every table ingesting writes.
        ingest_tables = (
            "observations",
            "series",
            "cell_versions",
            "landed_files",
            "staged_observations",
            "quarantine",
            "observation_revisions",
            "data_quality_results",
            "history_pending",
            "cascade_queue",
        )
        assert {t: counts[t] for t in ingest_tables} == {t: studied[t] for t in ingest_tables}
        assert duplicate_keys(engine) == {}
        with engine.connect() as conn:
            statuses = dict(conn.execute(text("SELECT status, count(*) FROM runs GROUP BY 1")).all())
        assert statuses.pop("FAILURE") == 1 and set(statuses) == {"SUCCESS"}
    finally:
        engine.dispose()
        shutil.rmtree(home, ignore_errors=True)


def _tables_exist(engine: Any) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT to_regclass('public.event_logs') IS NOT NULL")).scalar_one()
