"""`forecasting-pipeline worker`: one Celery worker serving one queue of steps.

Each step runs in a process of its own (`dagster api execute_step`, see `register_step_task`),
started from a thread of the worker's main process (Celery's `threads` pool), not from its
default prefork children: those are daemonic processes, which may not start processes, and a
step must (its own, and then statsforecast's parallel fits, multi-GPU training). The main
thread stays free meanwhile, so the worker answers the run coordinator's "are you still running
it?" while a step computes for an hour.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from forecasting_pipeline.execution.queues import GPU_QUEUE
from forecasting_pipeline.settings import Settings

CUDA_VISIBLE_DEVICES_VAR = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class WorkerPlan:
    queue: str
    name: str
    concurrency: int
    gpus: str | None  # CUDA_VISIBLE_DEVICES for the worker's steps; None: whatever the host shows

    def apply_devices(self) -> None:
        """CUDA reads the variable once, when torch first touches it."""
        if self.gpus is not None:
            os.environ[CUDA_VISIBLE_DEVICES_VAR] = self.gpus

    def argv(self, loglevel: str) -> list[str]:
        return [
            "worker",
            "--queues",
            self.queue,
            "--hostname",
            self.name,
            "--pool",
            "threads",
            "--concurrency",
            str(self.concurrency),
            "--loglevel",
            loglevel,
            # No chatter between workers: each answers the coordinator's questions directly.
            "--without-gossip",
            "--without-mingle",
        ]


def plan_worker(queue: str, concurrency: int, gpus: str | None, name: str | None) -> WorkerPlan:
    """`%h` stands for the host name, as in Celery: `gpu@node-3` is the name the event log records
    (expanded here so the banner shows it too)."""
    host = socket.gethostname()
    return WorkerPlan(
        queue=queue, name=(name or f"{queue}@%h").replace("%h", host), concurrency=concurrency, gpus=gpus
    )


def single_host_stores(settings: Settings, embedded_database: bool) -> list[str]:
    """What this worker shares only with processes on its own host: fine for workers beside the
    CLI, wrong for a worker on another machine."""
    notes = []
    if settings.mlflow_tracking_uri is None:
        notes.append("MLflow store is SQLite under FP_HOME (set MLFLOW_TRACKING_URI to the MLflow server)")
    if settings.storage_location is None:
        notes.append("intermediates and the calendar are under FP_HOME (set FP_STORAGE_URI)")
    if embedded_database:
        notes.append("database is the embedded PostgreSQL under FP_HOME (set FP_DATABASE_URL)")
    return notes


def device_summary(queue: str) -> str:
    """Which device the queue's steps will train on, as the accelerator resource will decide."""
    if queue != GPU_QUEUE:
        return "CPU steps"
    import torch  # only the gpu queue needs to know; a second or two at start

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)} CUDA device(s): {', '.join(names)}"
    return "no CUDA device visible: its steps train on the CPU"


def run_worker(settings: Settings, plan: WorkerPlan, loglevel: str = "INFO") -> None:
    """Serve `plan.queue` until stopped (SIGTERM or Ctrl-C: running steps finish first).
    Call `plan.apply_devices()` first, before anything imports torch."""
    from forecasting_pipeline.execution.celery_steps import worker_app

    app = worker_app(settings)
    app.worker_main(plan.argv(loglevel))
