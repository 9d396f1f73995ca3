"""The asset graph on real Celery workers: a `cpu` and a `gpu` worker on the local RabbitMQ.

Everything a multi-worker deployment uses is real and runs in its own process: RabbitMQ (a
virtual host of this module's own, so no other worker on the broker takes these tasks), the
workers started with `forecasting-pipeline worker`, an MLflow server with its PostgreSQL
backend and served artifacts, and the CLI as the run coordinator with FP_EXECUTOR=celery.
The stories: the demo runs with each step on the worker of its queue and publishes exactly the
forecasts of an in-process run; a `gpu` worker killed mid-training fails its step, and the
run re-executes from failure once another worker serves the queue, adding no duplicate row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from sqlalchemy import create_engine

from forecasting_pipeline.execution.celery_steps import queues_served
from forecasting_pipeline.execution.queues import CPU_QUEUE, GPU_QUEUE
from forecasting_pipeline.settings import load_settings
from forecasting_pipeline_tests.cli_runs import run_cli, user_env
from forecasting_pipeline_tests.conftest import query_frame
from forecasting_pipeline_tests.dagster_processes import free_port
from forecasting_pipeline_tests.table_state import count_changes, duplicate_keys, table_counts

pytestmark = pytest.mark.workers

# The steps that hold the accelerator (GPU_OP_TAGS); every other step belongs on `cpu`.
GPU_STEPS = {"hyperparameter_search", "global_models", "backtest_folds"}
DEMO_ARGS = ("demo", "--max-steps", "5", "--trials", "1")
WINDOW = "2016-10-30"  # the bundled dataset's newest window, the one the demo publishes
LOST_AFTER_SECONDS = 8
# Long enough on two cores that the kill lands inside the training, short enough to re-run.
KILLED_TRAINING = {"families": ["NHITS"], "max_steps": 150, "input_size": 48, "batch_size": 8}
FORECAST_COLUMNS = ["series_id", "window_key", "model_name", "step", "ds", "yhat", "lo_80", "hi_80", "lo_95"]


def _wait(condition: Callable[[], bool], what: str, timeout: float, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process ended (exit {process.returncode}) first")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.5)


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}"


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A RabbitMQ virtual host of this module's own on the machine's broker."""
    vhost = f"fp-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def mlflow_server(fresh_database, tmp_path_factory) -> Iterator[str]:
    """An MLflow server as multi-worker deployments run it: PostgreSQL backend, served artifacts."""
    port = free_port()
    folder = tmp_path_factory.mktemp("mlflow")
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            fresh_database(),
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        _wait(healthy, "the MLflow server answering", 240, server)
        yield url
    finally:
        _stop(server)
        log.close()


@pytest.fixture(scope="module")
def celery_env(deployment, broker_url, mlflow_server, tmp_path_factory) -> dict[str, str]:
    """The environment of every process of the Celery deployment: the module's database (so the
    test reads its runs and events), its own FP_HOME, the broker and the MLflow server."""
    return user_env(
        tmp_path_factory.mktemp("celery-home"),
        deployment.database_url,
        FP_EXECUTOR="celery",
        FP_CELERY_BROKER_URL=broker_url,
        MLFLOW_TRACKING_URI=mlflow_server,
        FP_WORKER_LOST_SECONDS=str(LOST_AFTER_SECONDS),
    )


class Workers:
    """Worker processes of the deployment, started as a user starts them."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self._env = env
        self._folder = folder
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, queue: str, name: str) -> str:
        log = (self._folder / f"{name}.log").open("w")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forecasting_pipeline.cli",
                "worker",
                "--queue",
                queue,
                "--name",
                name + "@%h",
            ],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        settings = load_settings(self._env)
        _wait(lambda: queue in queues_served(settings), f"worker {name} serving {queue}", 180, process)
        return f"{name}@{os.uname().nodename}"

    def log(self, name: str) -> str:
        return (self._folder / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for process in self.processes.values():
            _stop(process)


@pytest.fixture(scope="module")
def workers(celery_env, tmp_path_factory) -> Iterator[Workers]:
    started = Workers(celery_env, tmp_path_factory.mktemp("workers"))
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="module")
def celery_demo(celery_env, workers, instance) -> dict[str, str]:
    """The demo with every step on a worker; the names of the two workers."""
    names = {CPU_QUEUE: workers.start(CPU_QUEUE, "cpu-a"), GPU_QUEUE: workers.start(GPU_QUEUE, "gpu-a")}
    done = run_cli(celery_env, *DEMO_ARGS, timeout=1200)
    logs = "\n".join(workers.log(name)[-2000:] for name in ("cpu-a", "gpu-a"))
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{logs}"
    return names


def _step_workers(instance: DagsterInstance, run_id: str) -> dict[str, str]:
    """Step key → the Celery worker that executed it, from the run's engine events."""
    found = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.engine_event_data.metadata
        if "Celery worker" in metadata:
            found[entry.step_key] = metadata["Celery worker"].value
    return found


def _succeeded_steps(instance: DagsterInstance, run_id: str) -> set[str]:
    return {entry.step_key for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)}


def test_the_demo_runs_each_step_on_the_worker_of_its_queue(celery_demo, instance):
    runs = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    assert runs, "the demo made no successful run"
    ran_on: dict[str, set[str]] = {}
    for record in runs:
        run_id = record.dagster_run.run_id
        executed = _step_workers(instance, run_id)
        # Every step that succeeded was executed by a worker, none by the coordinator.
        assert _succeeded_steps(instance, run_id) <= set(executed), record.dagster_run.job_name
        for step, worker in executed.items():
            ran_on.setdefault(worker, set()).add(step)
    assert ran_on[celery_demo[GPU_QUEUE]] == GPU_STEPS
    cpu_steps = ran_on[celery_demo[CPU_QUEUE]]
    assert {"raw_observations", "training_panel", "local_models", "model_selection"} <= cpu_steps
    assert "predictions" in cpu_steps
    assert not cpu_steps & GPU_STEPS
    assert set(ran_on) == set(celery_demo.values())


def test_the_demo_on_workers_publishes_the_forecasts_of_an_in_process_run(
    celery_demo, db_engine, fresh_database, tmp_path_factory
):
    local_url = fresh_database()
    local_env = user_env(tmp_path_factory.mktemp("local-home"), local_url, FP_EXECUTOR="local")
    done = run_cli(local_env, *DEMO_ARGS, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    query = f"SELECT {', '.join(FORECAST_COLUMNS)} FROM forecasting.predictions ORDER BY 1, 2, 3, 4"
    on_workers = query_frame(db_engine, query)
    local_engine = create_engine(local_url)
    try:
        in_process = query_frame(local_engine, query)
    finally:
        local_engine.dispose()
    assert len(on_workers) > 0
    assert set(on_workers["model_name"]) >= {"NHITS", "SeasonalNaive"}
    pd.testing.assert_frame_equal(on_workers, in_process, check_exact=False, rtol=1e-9, atol=1e-9)


def _training_script(env_window: str) -> str:
    """The run coordinator of the killed training: `train_models`' global models of the window."""
    return textwrap.dedent(
        f"""
        from dagster import DagsterInstance
        from forecasting_pipeline.automation import launch
        from forecasting_pipeline.bootstrap import prepare_deployment

        prepare_deployment()
        result = launch.run_partition_range(
            "train_models", DagsterInstance.get(), {env_window!r}, {env_window!r},
            run_config={{"ops": {{"global_models": {{"config": {KILLED_TRAINING!r}}}}}}},
            assets=["global_models"],
        )
        print("RUN", result.run_id, result.success)
        """
    )


def _mlflow_runs(tracking_uri: str, status: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("forecasting-pipeline")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"attributes.status = '{status}'")


def test_a_killed_gpu_worker_fails_its_step_and_the_run_reexecutes_from_failure(
    celery_demo, celery_env, workers, instance, db_engine, mlflow_server
):
    before = table_counts(db_engine)
    coordinator = subprocess.Popen(
        [sys.executable, "-c", _training_script(WINDOW)],
        env=celery_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait(lambda: bool(_mlflow_runs(mlflow_server, "RUNNING")), "training under way", 600, coordinator)
        os.killpg(workers.processes["gpu-a"].pid, signal.SIGKILL)  # as the OOM killer or a lost node
        output, _ = coordinator.communicate(timeout=300)
    finally:
        coordinator.kill()
    assert coordinator.returncode == 0, output[-3000:]
    _, run_id, success = next(line for line in output.splitlines() if line.startswith("RUN ")).split()
    assert success == "False"

    failed = instance.get_run_by_id(run_id)
    assert failed.status == DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    message = str(failure.dagster_event.event_specific_data.error.to_string())
    assert "global_models" in message and f"worker {celery_demo[GPU_QUEUE]} stopped answering" in message
    assert "global_models" not in _succeeded_steps(instance, run_id)
    # The lost training stored nothing, and the MLflow run it opened is closed.
    assert count_changes(before, table_counts(db_engine)) == {}
    assert _mlflow_runs(mlflow_server, "RUNNING") == []
    assert len(_mlflow_runs(mlflow_server, "FAILED")) == 1

    replacement = workers.start(GPU_QUEUE, "gpu-b")
    done = run_cli(celery_env, "rerun", run_id, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (child,) = [
        record.dagster_run
        for record in instance.get_run_records(RunsFilter(job_name="train_models"))
        if record.dagster_run.parent_run_id == run_id
    ]
    assert child.status == DagsterRunStatus.SUCCESS
    assert _step_workers(instance, child.run_id) == {"global_models": replacement}
    # One new NHITS version with its cost, its loss curve and the re-execution's lineage row.
    assert count_changes(before, table_counts(db_engine)) == {
        "metrics": 1,
        "models": 1,
        "resource_stats": 1,
        "runs": 1,
    }
    assert duplicate_keys(db_engine) == {}
