"""Resumable hyperparameter search: one Optuna study per (model family, frequency group, window).

Studies live in the project's PostgreSQL database, schema `optuna`, because Optuna, Dagster and
MLflow each keep an `alembic_version` table and would otherwise overwrite one another's.

A study is a budget, not a loop: `run_study` tops it up to exactly `SearchBudget.trials`
finished trials, so a run killed halfway (SIGKILL, a timeout, an OOM-killed pod) is resumed by
the next run of the same window instead of starting over or overshooting. Each new window is
warm-started from the best parameters of the previous window's study, because consecutive
windows of one series group rarely want very different hyperparameters.

Only assets import this module, at run time; torch and Lightning are imported where needed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from forecasting_pipeline.storage.embedded import with_psycopg2_driver

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger(__name__)

SCHEMA = "optuna"

# User attributes written on trials.
INTERRUPTED_ATTR = "interrupted"
RUN_TAG_ATTR = "run_tag"
ERROR_ATTR = "error"

# Default pruner: the median of two finished trials is the least evidence worth pruning on, and
# neuralforecast validates every 100 steps by default, so no trial is judged on its first check.
_PRUNER_STARTUP_TRIALS = 2
_PRUNER_WARMUP_STEPS = 100

# Advisory-lock namespaces (hashed with the study name, or alone for table creation).
_STUDY_LOCK_NAMESPACE = "forecasting_pipeline.search.study"
_INIT_LOCK_NAMESPACE = "forecasting_pipeline.search.init"

_SPENT_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class StudyBusyError(RuntimeError):
    """Another live process is running this study; running both would overshoot the budget."""


@dataclass(frozen=True)
class SearchBudget:
    """How much search one study gets, summed over every run that touches it."""

    trials: int  # finished trials the study must end with (exactly)
    timeout_seconds: float | None = None  # wall-clock cap of one call; the study resumes later
    warm_start_trials: int = 1  # best trials of the previous window's study enqueued first

    def __post_init__(self) -> None:
        if self.trials < 0:
            raise ValueError(f"trials must be >= 0, got {self.trials}")
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {self.timeout_seconds}")
        if self.warm_start_trials < 0:
            raise ValueError(f"warm_start_trials must be >= 0, got {self.warm_start_trials}")


@dataclass(frozen=True)
class SearchOutcome:
    study_name: str
    best_params: dict[str, Any]  # {} when no trial completed
    best_value: float | None
    finished_trials: int  # trials that count toward the budget after this call
    trials_run: int  # trials this call ran
    interrupted_trials: int  # RUNNING trials of a killed earlier attempt that this call marked FAIL
    warm_started_from: str | None  # previous study whose best params were enqueued, if any
    enqueued: list[dict[str, Any]] = field(default_factory=list)


def study_name(family: str, group: str, window: str) -> str:
    """`family/group/window`; `previous_window_study` parses it back, so no part may hold a `/`."""
    parts = (family, group, window)
    for part in parts:
        if not part or "/" in part:
            raise ValueError(f"study name parts must be non-empty and free of '/': {parts!r}")
    return "/".join(parts)


def optuna_storage(database_url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on the project database, with its tables in schema `optuna`.

    The schema is chosen with the connection's search_path rather than by rewriting Optuna's
    models, so Optuna's own alembic migrations keep working unchanged. Table creation is
    serialised with an advisory lock: parallel Dagster steps opening the storage on a fresh
    database would otherwise race in `CREATE TABLE` and one of them would fail.
    """
    url = with_psycopg2_driver(database_url)
    setup = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with setup.connect() as conn:
            key = _lock_key(_INIT_LOCK_NAMESPACE)
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs={
                        "pool_pre_ping": True,
                        "connect_args": {"options": f"-csearch_path={SCHEMA}"},
                    },
                )
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        setup.dispose()


def previous_window_study(
    storage: optuna.storages.BaseStorage, family: str, group: str, window: str
) -> str | None:
    """The newest study of the same family and group before `window`, to warm-start from.

    Window keys are ISO dates, so string order is time order; a later window is never used
    (a backfill of an old window must not learn from the future).
    """
    prefix = study_name(family, group, window).rsplit("/", 1)[0] + "/"
    earlier = [
        study.study_name
        for study in storage.get_all_studies()
        if study.study_name.startswith(prefix)
        and "/" not in study.study_name[len(prefix) :]
        and study.study_name[len(prefix) :] < window
    ]
    return max(earlier, key=lambda name: name[len(prefix) :], default=None)


def run_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    objective: Callable[[optuna.Trial], float],
    budget: SearchBudget,
    *,
    seed: int,
    previous_study: str | None = None,
    direction: str = "minimize",
    pruner: optuna.pruners.BasePruner | None = None,
    run_tag: str | None = None,
) -> SearchOutcome:
    """Top the study `name` up to exactly `budget.trials` finished trials and report its best.

    Resuming: trials a killed earlier attempt left RUNNING are marked FAIL with user attribute
    `interrupted=True` and do not count; COMPLETE, PRUNED and FAIL trials whose objective raised
    do count, so a configuration that crashes is not retried forever. A KeyboardInterrupt or
    SystemExit (Lightning turns Ctrl+C into SystemExit) or Dagster's run termination propagates
    out of this call; the trial it interrupted is tagged `interrupted` and a later call runs a
    replacement.
    `timeout_seconds` is checked before each trial starts: a started trial always finishes.

    An objective raising an `Exception` becomes a FAIL trial (its repr in user attribute
    `error`), so one bad configuration (e.g. out of memory) cannot fail the asset. The flip side:
    a bug that fails every trial spends the budget quietly and leaves `best_value=None`, which
    the caller must treat as a failure; deleting the study lets a fixed objective start over.

    The sampler seed is offset by the number of trials already in the study, so a resumed study
    is reproducible from its history yet does not replay the random startup points it already
    evaluated.

    Concurrency: one study is written by one Dagster step at a time (the run for its window).
    On PostgreSQL this is enforced: the call holds a session advisory lock on the study name,
    and a second call while the first is alive raises `StudyBusyError` rather than marking the
    first one's live trial as interrupted and running its own `remaining` trials, which would
    overshoot the budget. The lock dies with the holder's connection, so a SIGKILLed run never
    blocks its retry. Other storages get no lock, and two concurrent calls may then overshoot.
    """
    with _study_lock(storage, name):
        interrupted = _fail_interrupted_trials(storage, name)
        existing = _existing_trial_count(storage, name)
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            load_if_exists=True,
            direction=direction,
            sampler=optuna.samplers.TPESampler(seed=seed + existing),
            pruner=pruner
            or optuna.pruners.MedianPruner(
                n_startup_trials=_PRUNER_STARTUP_TRIALS, n_warmup_steps=_PRUNER_WARMUP_STEPS
            ),
        )
        if study.direction != optuna.study.StudyDirection[direction.upper()]:
            raise ValueError(f"study {name!r} exists with direction {study.direction.name.lower()}")

        warm_started_from: str | None = None
        enqueued: list[dict[str, Any]] = []
        if existing == 0 and previous_study is not None and budget.warm_start_trials > 0:
            enqueued = _enqueue_best_of(study, storage, previous_study, budget.warm_start_trials)
            warm_started_from = previous_study if enqueued else None

        spent_before = _spent(study)
        remaining = budget.trials - spent_before
        trials_before = len(study.get_trials(deepcopy=False, states=_SPENT_STATES))
        if remaining > 0:
            study.optimize(
                _guarded(objective, run_tag),
                n_trials=remaining,
                timeout=budget.timeout_seconds,
                catch=(Exception,),
            )
        trials_run = len(study.get_trials(deepcopy=False, states=_SPENT_STATES)) - trials_before
        best = _best_trial(study)
        return SearchOutcome(
            study_name=name,
            best_params=dict(best.params) if best else {},
            best_value=best.value if best else None,
            finished_trials=_spent(study),
            trials_run=trials_run,
            interrupted_trials=interrupted,
            warm_started_from=warm_started_from,
            enqueued=enqueued,
        )


def pruning_callback(trial: optuna.Trial, monitor: str = "valid_loss") -> Any:
    """A Lightning callback that lets the study's pruner stop a hopeless trial mid-training.

    Built on `pytorch_lightning` (the package neuralforecast 3.3 trains with; a callback of the
    separate `lightning` package would be rejected by its Trainer). Steps are the trainer's
    global step, so reports from validation checks at any interval line up across trials.
    """
    return _pruning_callback_class()(trial, monitor)


@cache
def _pruning_callback_class() -> type:
    import pytorch_lightning as pl

    class OptunaPruning(pl.Callback):
        def __init__(self, trial: optuna.Trial, monitor: str) -> None:
            super().__init__()
            self.trial = trial
            self.monitor = monitor

        def __deepcopy__(self, memo: dict[int, Any]) -> OptunaPruning:
            # neuralforecast deep-copies models (and their trainer kwargs, callbacks included).
            # The trial is a handle on a row, not state: a copy would open its own storage.
            return type(self)(self.trial, self.monitor)

        def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            # The sanity check runs on an untrained model; its loss says nothing about the trial.
            if trainer.sanity_checking:
                return
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                return
            step = trainer.global_step
            self.trial.report(float(value), step)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"trial pruned at step {step} ({self.monitor}={float(value)})")

    return OptunaPruning


def _guarded(objective: Callable[[optuna.Trial], float], run_tag: str | None) -> Callable:
    def run(trial: optuna.Trial) -> float:
        if run_tag is not None:
            trial.set_user_attr(RUN_TAG_ATTR, run_tag)
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            # Best effort: a storage error here must not mask the objective's own error.
            with suppress(Exception):
                trial.set_user_attr(ERROR_ATTR, repr(error)[:2000])
            raise
        except BaseException:
            # KeyboardInterrupt, SystemExit, Dagster's interruption: not the configuration's
            # fault, so the trial must not count. Optuna marks a KeyboardInterrupt trial FAIL
            # and leaves the others RUNNING (then the next call marks them FAIL); the attribute
            # is what tells either apart from a failing objective.
            with suppress(Exception):
                trial.set_user_attr(INTERRUPTED_ATTR, True)
            raise

    return run


def _counts(trial: FrozenTrial) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not trial.user_attrs.get(INTERRUPTED_ATTR, False)


def _spent(study: optuna.Study) -> int:
    return sum(_counts(trial) for trial in study.get_trials(deepcopy=False, states=_SPENT_STATES))


def _study_id(storage: optuna.storages.BaseStorage, name: str) -> int | None:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


def _existing_trial_count(storage: optuna.storages.BaseStorage, name: str) -> int:
    study_id = _study_id(storage, name)
    return 0 if study_id is None else len(storage.get_all_trials(study_id, deepcopy=False))


def _fail_interrupted_trials(storage: optuna.storages.BaseStorage, name: str) -> int:
    """Mark the RUNNING trials of a dead attempt FAIL; only safe while holding the study lock.

    Done on the raw storage before the Study (and its trial cache) exists, so the cache never
    holds the stale RUNNING state.
    """
    study_id = _study_id(storage, name)
    if study_id is None:
        return 0
    stale = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        # The attribute first: a finished trial can no longer be updated.
        storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    if stale:
        logger.warning(
            "study %s: marked %d interrupted trial(s) FAIL: %s",
            name,
            len(stale),
            [trial.number for trial in stale],
        )
    return len(stale)


def fail_trials_of_runs(storage: optuna.storages.BaseStorage, run_ids: Collection[str]) -> int:
    """Mark FAIL (interrupted) the RUNNING trials that the given dead Dagster runs were running.

    `run_study` does the same for its own study when it next starts, but a study whose window
    is never re-run would otherwise show a trial running forever. Safe without the study lock
    only because the runs are known to be over (their trials carry their run id in `run_tag`).
    Returns how many trials were marked.
    """
    dead = set(run_ids)
    if not dead:
        return 0
    marked = 0
    for study in storage.get_all_studies():
        running = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
        for trial in running:
            if trial.user_attrs.get(RUN_TAG_ATTR) in dead:
                storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                logger.warning("study %s: marked trial %d of dead run FAIL", study.study_name, trial.number)
                marked += 1
    return marked


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    return study.best_trial


def _enqueue_best_of(
    study: optuna.Study, storage: optuna.storages.BaseStorage, previous: str, count: int
) -> list[dict[str, Any]]:
    try:
        before = optuna.load_study(study_name=previous, storage=storage)
    except KeyError:
        logger.info("no previous study %s to warm-start %s from", previous, study.study_name)
        return []
    completed = before.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = before.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(completed, key=lambda trial: trial.value, reverse=maximize)
    enqueued: list[dict[str, Any]] = []
    for trial in ranked[:count]:
        params = dict(trial.params)
        if params in enqueued:
            continue
        study.enqueue_trial(params, user_attrs={"warm_start_from": previous}, skip_if_exists=True)
        enqueued.append(params)
    return enqueued


@contextmanager
def _study_lock(storage: optuna.storages.BaseStorage, name: str) -> Iterator[None]:
    engine: Engine | None = getattr(storage, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    key = _lock_key(_STUDY_LOCK_NAMESPACE, name)
    # Autocommit: a session lock needs no transaction, and an open one would sit "idle in
    # transaction" for the whole search.
    conn: Connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one():
            raise StudyBusyError(f"study {name!r} is being run by another process")
        try:
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            except Exception:
                # Never pool a connection that may still hold the lock.
                conn.invalidate()
                raise
    finally:
        conn.close()


def _lock_key(*parts: str) -> int:
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
