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

import ctypes
import os
import signal
import subprocess
import sys
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
        # One read of state and meta together: read apart, a task that finishes in between
        # would pair STARTED with the step's result.
        meta = result.backend.get_task_meta(result.id)
        info = meta.get("result")
        if meta.get("status") != "STARTED" or not isinstance(info, dict):
            return None  # still queued (waiting for a worker is not losing one), or finished
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

    def __init__(
        self,
        result: Any,
        watch: _WorkerWatch,
        step_key: str,
        queue: str,
        lost_after: float,
        on_lost: Callable[[str], None],
    ):
        self._result = result
        self._on_lost = on_lost
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
                self._on_lost(self._step_key)
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
        lost: list[str] = []

        def submit(app: Any, context: Any, step: Any, queue: str, priority: int, known_state: Any) -> Any:
            with warnings.catch_warnings():
                # Dagster registers its step task again for every step: the same task, no news.
                warnings.simplefilter("ignore", DuplicateTaskNameWarning)
                result = _submit_task(app, context, step, queue, priority, known_state)
            return _WatchedResult(result, watch, step.key, queue, self._lost_after, lost.append)

        try:
            yield from core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)
        except BaseException:
            # A step's slot in a pool (`gpu`) is given back when its end is handled; a loop that
            # stopped on an error never handles it, and the next run would wait for that slot.
            plan_context.instance.event_log_storage.free_concurrency_slots_for_run(plan_context.run_id)
            raise
        finally:
            if lost:
                # What the lost steps opened stays open: their MLflow runs RUNNING, their Optuna
                # trials RUNNING. Every other step has ended by now, so all that is still open
                # under this run is theirs.
                from forecasting_pipeline.automation.recovery import close_open_records

                closed = close_open_records([plan_context.run_id])
                plan_context.log.warning(
                    f"steps {', '.join(lost)} lost with their workers; closed {len(closed.mlflow_runs)} "
                    f"MLflow runs and {closed.trials} Optuna trials they left running"
                )


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
    """The app a worker runs: the coordinators' app, with the step task that runs each step in a
    process of its own."""
    app = make_app(app_args(settings))
    register_step_task(app)
    return app


def register_step_task(app: Any) -> None:
    """Dagster's step task under its own name and arguments, but each step in a new process.

    dagster-celery runs a step inside the worker, which loaded the code and the deployment's
    calendar once, when it started: a worker started before the first data arrived would build
    other partitions than the run, and every step would leave its memory (and GPU memory) in the
    worker. `dagster api execute_step`, what Dagster's own multiprocess executor runs per step,
    loads both fresh, may start processes of its own, and gives everything back when it exits.
    The process dies with the worker (PR_SET_PDEATHSIG), so a lost worker leaves no step
    writing behind the coordinator's back.
    """
    from dagster import DagsterInstance
    from dagster._core.events import EngineEventData
    from dagster._grpc.types import ExecuteStepArgs
    from dagster._serdes import serialize_value, unpack_value
    from dagster_celery.config import TASK_EXECUTE_PLAN_NAME
    from dagster_celery.core_execution_loop import DELEGATE_MARKER

    @app.task(bind=True, name=TASK_EXECUTE_PLAN_NAME, resultrepr_maxsize=120)
    def execute_step(task: Any, execute_step_args_packed: dict, executable_dict: dict) -> list[str]:
        del executable_dict  # the step process loads the job from the run's own origin
        args = unpack_value(execute_step_args_packed, as_type=ExecuteStepArgs)
        step_keys = ", ".join(args.step_keys_to_execute or [])
        with DagsterInstance.from_ref(args.instance_ref) as instance:
            run = instance.get_run_by_id(args.run_id)
            started = instance.report_engine_event(
                f"Executing steps {step_keys} in celery worker",
                run,
                EngineEventData(
                    {"step_keys": step_keys, "Celery worker": task.request.hostname},
                    marker_end=DELEGATE_MARKER,
                ),
                QueuedCeleryExecutor,
                step_key=args.step_keys_to_execute[0] if args.step_keys_to_execute else None,
            )
        return [serialize_value(started), *_run_step_process(args, step_keys)]


class StepProcessError(RuntimeError):
    """A step's process ended abnormally (killed, crashed): the step's outcome is unknown."""


def _run_step_process(args: Any, step_keys: str) -> list[str]:
    """Execute the step in `dagster api execute_step`; its events, serialized, as it printed them."""
    from dagster._core.events import DagsterEvent
    from dagster._serdes import deserialize_value

    environment = {**os.environ}
    environment.update({item["name"]: item["value"] for item in args.get_command_env()})
    command = [sys.executable, "-m", "dagster", "api", "execute_step"]
    # The step's own output goes to the worker's log; stdout carries the events, one per line.
    done = subprocess.run(
        command, env=environment, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_worker
    )
    events = []
    for line in done.stdout.splitlines():
        try:
            deserialize_value(line, DagsterEvent)
        except Exception:  # noqa: S112 - a line the step printed, not an event
            continue
        events.append(line)
    if done.returncode != 0:
        raise StepProcessError(
            f"step {step_keys}: its process ended with exit status {done.returncode} "
            f"({_signal_name(done.returncode)}); the worker's log holds its output"
        )
    return events


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return "an error outside the step's code"


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_worker() -> None:
    """In the step's process, before it runs anything: be killed when the worker dies. Only a
    call into libc, loaded beforehand: nothing here may take a lock another thread held."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


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
