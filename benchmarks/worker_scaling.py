"""The weekly cycle on Celery workers: its wall time with 1 and with 2 `cpu` workers.

The cycle is weekly_cycle.py's (same stages, same model settings, the same synthetic hourly
series), coordinated by this process with FP_EXECUTOR=celery; every step executes on a worker
started with `forecasting-pipeline worker`: one `gpu` worker (on the CPU here) and N `cpu`
workers. Each configuration gets a fresh database, a fresh MLflow database (the tracking store
every worker shares) and a RabbitMQ virtual host of its own, and runs in a child process,
because the executor is chosen when the package is imported.

Usage: python benchmarks/worker_scaling.py --series 1000 --cpu-workers 1 2
Writes benchmarks/results/worker_scaling_<series>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from _common import configure, fresh_database, hourly_series, write_result

RESULT_PREFIX = "RESULT "


@contextmanager
def rabbitmq_vhost():
    """A virtual host of this configuration's own: no other worker on the broker takes its tasks."""
    name = f"fp-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"pyamqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True)


@contextmanager
def started_workers(queues: list[str], home: Path):
    """The workers, each in its own session; stopped (running steps finish first) at the end."""
    from forecasting_pipeline.execution.celery_steps import queues_served
    from forecasting_pipeline.settings import load_settings

    processes = []
    for index, queue in enumerate(queues):
        log = (home / f"worker-{queue}-{index}.log").open("w")
        command = [sys.executable, "-m", "forecasting_pipeline.cli", "worker", "--queue", queue]
        processes.append(
            subprocess.Popen(
                [*command, "--name", f"{queue}-{index}@%h"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        deadline = time.monotonic() + 300
        while not set(queues) <= queues_served(load_settings()):
            assert time.monotonic() < deadline, "the workers did not come up"
            time.sleep(1)
        yield
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=300)


def one_configuration(series: int, cpu_workers: int, history_weeks: int) -> dict[str, Any]:
    """The cycle with `cpu_workers` cpu workers and one gpu worker; its timings."""
    from weekly_cycle import CYCLE_END, PARTITION_START, run_cycle

    with ExitStack() as stack:
        url = stack.enter_context(fresh_database())
        mlflow_url = stack.enter_context(fresh_database())
        broker = stack.enter_context(rabbitmq_vhost())
        home = configure(
            url,
            FP_PARTITION_START=PARTITION_START,
            FP_EXECUTOR="celery",
            FP_CELERY_BROKER_URL=broker,
            MLFLOW_TRACKING_URI=mlflow_url,
        )
        os.environ["FP_STORAGE_URI"] = str(home / "storage")  # MLflow artifacts go beside it
        from dagster import DagsterInstance

        from forecasting_pipeline import operations
        from forecasting_pipeline.bootstrap import prepare_deployment
        from forecasting_pipeline.schemas import SERIES_DIMENSION

        deployment = prepare_deployment()
        # MLflow creates its tables on first use; workers starting together would race to.
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=mlflow_url).search_experiments()
        stack.enter_context(started_workers(["gpu", *["cpu"] * cpu_workers], home))
        instance = DagsterInstance.get()
        landing = deployment.settings.landing_dir
        landing.mkdir(parents=True, exist_ok=True)
        frame = hourly_series(series, (history_weeks + 1) * 168, CYCLE_END)
        new_week_start = CYCLE_END - timedelta(days=7)
        frame.filter(frame["ds"] < new_week_start.strftime("%Y-%m-%d")).write_csv(landing / "history.csv")
        started = time.perf_counter()
        operations.ingest(instance, deployment, progress=lambda _: None)
        setup_s = time.perf_counter() - started

        frame.filter(frame["ds"] >= new_week_start.strftime("%Y-%m-%d")).write_csv(landing / "new_week.csv")
        stage_s: dict[str, float] = {}

        @contextmanager
        def timed(name: str):
            began = time.perf_counter()
            yield
            stage_s[name] = round(time.perf_counter() - began, 1)

        started = time.perf_counter()
        window = new_week_start.strftime("%Y-%m-%d")
        run_cycle(
            instance, deployment, window, list(instance.get_dynamic_partitions(SERIES_DIMENSION)), timed
        )
        cycle_s = time.perf_counter() - started
        instance.dispose()
        return {
            "cpu_workers": cpu_workers,
            "gpu_workers": 1,
            "setup_ingest_s": round(setup_s, 1),
            "cycle_wall_s": round(cycle_s, 1),
            "stage_wall_s": stage_s,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--history-weeks", type=int, default=3)
    parser.add_argument("--cpu-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(RESULT_PREFIX + json.dumps(one_configuration(args.series, args.one, args.history_weeks)))
        return
    from weekly_cycle import CONFIG_BY_ASSET

    results = []
    for count in args.cpu_workers:
        child = [
            "--series",
            str(args.series),
            "--history-weeks",
            str(args.history_weeks),
            "--one",
            str(count),
        ]
        done = subprocess.run(
            [sys.executable, __file__, *child],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
        results.append(json.loads(lines[-1].removeprefix(RESULT_PREFIX)))
        print(results[-1])
    write_result(
        f"worker_scaling_{args.series}",
        {
            "what": f"one weekly cycle over {args.series:,} hourly series ({args.history_weeks} weeks of "
            "history already ingested) with FP_EXECUTOR=celery: every step on a Celery worker (RabbitMQ, "
            "PostgreSQL results, MLflow on PostgreSQL), one gpu worker and N cpu workers on this host",
            "date": datetime.now().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "models": CONFIG_BY_ASSET,
            "configurations": results,
        },
    )


if __name__ == "__main__":
    main()
