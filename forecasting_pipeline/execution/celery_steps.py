"""Steps as Celery tasks on two queues, and a coordinator that notices when a worker is lost.

Dagster's Celery executor does the distribution: each step becomes a task on the queue its
`dagster-celery/queue` tag names (the steps that tune, train and backtest carry `gpu`), and the
app's default queue takes the rest, here `cpu`. What it lacks is a way to notice a worker that
died: the run coordinator waits for the task's result, and a worker that was killed (out of
memory, `kill -9`, its node gone) never writes one, so the run would wait forever. Here every
task records its worker when it starts (`task_track_started`), and while a step runs the
coordinator asks that worker now and then whether it still runs the task. A worker answers
from its main thread while a step computes in another, so a long step is never mistaken for a
lost one; a worker that has not confirmed the task for `FP_WORKER_LOST_SECONDS` fails the step.
The run then fails, and a re-execution from failure runs the lost step again once a worker
serves its queue. Every write of a step is an upsert or an atomic file, so nothing duplicates.

Broker and result backend come from the environment in every process (they may hold
passwords), never from a run's configuration, which Dagster stores and shows.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from celery.exceptions import DuplicateTaskNameWarning
from dagster import executor, multiple_process_executor_requirements
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CeleryExecutor, _submit_task
from dagster_celery.make_app import make_app

from forecasting_pipeline.execution.queues import CPU_QUEUE, QUEUES
from forecasting_pipeline.settings import (
    CELERY_BACKEND_URL_VAR,
    EXECUTOR_VAR,
    Settings,
    SettingsError,
    load_settings,
)

# Celery's result tables, beside (not inside) Dagster's and the domain schema (sql/008).
RESULT_SCHEMA = "celery"
# How long one question to a worker may take; a busy broker answers in milliseconds.
_ASK_TIMEOUT_SECONDS = 2.0


class WorkerLostError(RuntimeError):
    """The worker running a step stopped answering: the step's outcome is unknown and it failed."""


class NoWorkerError(SettingsError):
    """FP_EXECUTOR=celery, but no worker serves a queue the run needs (or the broker is down)."""


def app_args(settings: Settings) -> dict[str, Any]:
    """The Celery app of coordinators and workers alike: they must agree on every setting here."""
    backend = settings.celery_result_backend
    if backend is None:
        raise SettingsError(
            f"{EXECUTOR_VAR}=celery needs a result backend that workers can reach: set "
            f"{CELERY_BACKEND_URL_VAR}, or start the command through `forecasting-pipeline`, which "
            "resolves the deployment's database"
        )
    return {
        "broker": settings.celery_broker_url,
        "backend": backend,
        "include": [],
        "config_source": {
            # Untagged steps; `gpu` steps name their queue in their op tags.
            "task_default_queue": CPU_QUEUE,
            # The worker's name is stored with the STARTED state: the coordinator asks it.
            "task_track_started": True,
            # One step at a time per worker slot: a step is minutes of work, never prefetched.
            "worker_prefetch_multiplier": 1,
            "database_table_schemas": {"task": RESULT_SCHEMA, "group": RESULT_SCHEMA},
            "database_engine_options": {"pool_pre_ping": True},
            "broker_connection_retry_on_startup": True,
            # Steps write to the terminal through libraries that need a real stream (Lightning's
            # progress, tqdm): Celery's stdout proxy lacks `encoding` and fails them.
            "worker_redirect_stdouts": False,
        },
    }


class _WorkerWatch:
    """Asks the worker of each started task, at most every `interval` seconds, whether it still
    runs it; answers the name of a worker that has not confirmed its task for `lost_after`."""

    def __init__(self, app: Any, lost_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._app = app
        self._lost_after = lost_after
        self._interval = max(0.5, min(lost_after / 4, 15.0))
        self._clock = clock
        self._confirmed: dict[str, float] = {}
        self._asked: dict[str, float] = {}

    def lost_worker(self, result: Any) -> str | None:
        if result.state != "STARTED":
            return None  # still queued: waiting for a worker is not losing one
        info = result.info if isinstance(result.info, dict) else {}
        worker = info.get("hostname")
        if not worker:
            return None
        now = self._clock()
        task_id = result.id
        self._confirmed.setdefault(task_id, now)
        if now - self._asked.get(task_id, float("-inf")) >= self._interval:
            self._asked[task_id] = now
            if self._runs(worker, task_id):
                self._confirmed[task_id] = now
        return worker if now - self._confirmed[task_id] > self._lost_after else None

    def _runs(self, worker: str, task_id: str) -> bool:
        try:
            replies = self._app.control.inspect(
                destination=[worker], timeout=_ASK_TIMEOUT_SECONDS
            ).query_task(task_id)
        except OSError:  # the broker itself is unreachable: no evidence against the worker
            return True
        return task_id in (replies or {}).get(worker, {})

    def forget(self, task_id: str) -> None:
        self._confirmed.pop(task_id, None)
        self._asked.pop(task_id, None)


class _WatchedResult:
    """A step's task result that also becomes ready when its worker is lost; what the Dagster
    execution loop polls once a second."""

    def __init__(self, result: Any, watch: _WorkerWatch, step_key: str, queue: str, lost_after: float):
        self._result = result
        self._watch = watch
        self._step_key = step_key
        self._queue = queue
        self._lost_after = lost_after
        self._lost_worker: str | None = None

    def ready(self) -> bool:
        if self._result.ready():
            return True
        self._lost_worker = self._watch.lost_worker(self._result)
        return self._lost_worker is not None

    def get(self) -> Any:
        try:
            if self._lost_worker is not None and not self._result.ready():
                self._result.revoke()  # never run it later: a re-execution owns the step now
                raise WorkerLostError(
                    f"step {self._step_key}: worker {self._lost_worker} stopped answering for "
                    f"{self._lost_after:.0f}s while running it (killed, out of memory or its host "
                    f"lost). Re-execute the run from failure once a worker serves queue "
                    f"{self._queue!r} (`forecasting-pipeline worker --queue {self._queue}`)"
                )
            return self._result.get(propagate=True)
        finally:
            self._watch.forget(self._result.id)
            if self._result.ready():
                self._result.forget()  # the events are in the event log; the copy is not needed

    def revoke(self) -> None:
        self._result.revoke()


class QueuedCeleryExecutor(CeleryExecutor):
    """Dagster's Celery executor with this deployment's app and lost-worker detection."""

    def __init__(self, settings: Settings, retries: RetryMode) -> None:
        super().__init__(retries=retries, **app_args(settings))
        self._lost_after = settings.worker_lost_seconds

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        watch = _WorkerWatch(make_app(self.app_args()), self._lost_after)

        def submit(app: Any, context: Any, step: Any, queue: str, priority: int, known_state: Any) -> Any:
            with warnings.catch_warnings():
                # Dagster registers its step task again for every step: the same task, no news.
                warnings.simplefilter("ignore", DuplicateTaskNameWarning)
                result = _submit_task(app, context, step, queue, priority, known_state)
            return _WatchedResult(result, watch, step.key, queue, self._lost_after)

        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


@executor(
    name="celery",
    config_schema={"retries": get_retries_config()},
    requirements=multiple_process_executor_requirements(),
)
def queued_celery_executor(init_context: Any) -> QueuedCeleryExecutor:
    """Steps on Celery queues `cpu` and `gpu` (FP_EXECUTOR=celery); see docs/scale-out.md."""
    retries = RetryMode.from_config(init_context.executor_config["retries"])
    return QueuedCeleryExecutor(load_settings(), retries)


def worker_app(settings: Settings) -> Any:
    """The app a worker runs: the coordinators' app with Dagster's step task registered."""
    from dagster_celery.tasks import create_task

    app = make_app(app_args(settings))
    # The result of a task is the step's events, already in the event log: log only its size.
    create_task(app, resultrepr_maxsize=120)
    return app


def queues_served(settings: Settings) -> set[str]:
    """Queues some live worker consumes; raises NoWorkerError when the broker cannot be asked."""
    app = make_app(app_args(settings))
    try:
        replies = app.control.inspect(timeout=_ASK_TIMEOUT_SECONDS).active_queues() or {}
    except OSError as exc:
        raise NoWorkerError(
            f"{EXECUTOR_VAR}=celery: the Celery broker is unreachable ({exc}); check "
            "FP_CELERY_BROKER_URL and that RabbitMQ runs"
        ) from None
    return {queue["name"] for queues in replies.values() for queue in queues}


_verified: set[str] = set()


def require_workers(settings: Settings, queues: tuple[str, ...] = QUEUES) -> None:
    """Fail early, with what to start, when a queue the run needs has no worker: its steps
    would otherwise wait in the queue without a word. Asked once per process and queue: a
    worker lost later fails its step instead (`_WorkerWatch`)."""
    wanted = [queue for queue in queues if queue not in _verified]
    if not wanted:
        return
    served = queues_served(settings)
    _verified.update(queue for queue in wanted if queue in served)
    missing = [queue for queue in wanted if queue not in served]
    if missing:
        commands = "; ".join(f"`forecasting-pipeline worker --queue {queue}`" for queue in missing)
        raise NoWorkerError(
            f"{EXECUTOR_VAR}=celery, but no worker serves queue {', '.join(missing)}: start {commands} "
            "on a host that shares this deployment's database, storage and MLflow server"
        )
