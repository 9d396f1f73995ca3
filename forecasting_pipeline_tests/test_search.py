"""Resumable Optuna studies on the real PostgreSQL server: budgets, resumption, warm starts, pruning.

Objectives are cheap pure functions; only the pruning test trains (a two-parameter Lightning
module for a few steps), because the callback must work inside a real Trainer loop.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, make_url, text

from forecasting_pipeline.modeling.search import (
    ERROR_ATTR,
    INTERRUPTED_ATTR,
    RUN_TAG_ATTR,
    SearchBudget,
    StudyBusyError,
    optuna_storage,
    previous_window_study,
    pruning_callback,
    run_study,
    study_name,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

_SOCKET_DIR = Path("/var/run/postgresql")


@pytest.fixture(scope="module")
def database_url(server_url: str) -> Iterator[str]:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"fp_search_{uuid.uuid4().hex}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="module")
def storage(database_url: str) -> Iterator[optuna.storages.RDBStorage]:
    rdb = optuna_storage(database_url)
    yield rdb
    rdb.engine.dispose()


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10.0, 10.0)
    return (x - 2.0) ** 2


def unique(family: str) -> str:
    """A study name no other test uses, so tests share one database in any order."""
    return study_name(family, f"g{uuid.uuid4().hex[:8]}", "2016-10-30")


def trials_of(storage, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).trials


def test_tables_live_in_schema_optuna_not_public(storage, database_url: str) -> None:
    run_study(storage, unique("Schema"), quadratic, SearchBudget(trials=1), seed=0)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_name IN ('studies', 'trials', 'alembic_version')"
            )
        ).all()
    engine.dispose()
    assert sorted(rows) == [("optuna", "alembic_version"), ("optuna", "studies"), ("optuna", "trials")]


def test_storage_opens_on_a_unix_socket_url(database_url: str, storage) -> None:
    url = make_url(database_url)
    if url.host not in ("127.0.0.1", "localhost") or not (_SOCKET_DIR / ".s.PGSQL.5432").exists():
        pytest.skip("no local PostgreSQL socket")
    socket_url = f"postgresql://{url.username}:@/{url.database}?host={_SOCKET_DIR}"
    name = unique("Socket")
    run_study(storage, name, quadratic, SearchBudget(trials=1), seed=0)
    over_socket = optuna_storage(socket_url)
    try:
        assert name in {study.study_name for study in over_socket.get_all_studies()}
    finally:
        over_socket.engine.dispose()


def test_study_name_rejects_slashes() -> None:
    assert study_name("NHITS", "hourly", "2016-10-30") == "NHITS/hourly/2016-10-30"
    with pytest.raises(ValueError):
        study_name("NHITS", "hourly/x", "2016-10-30")


def test_budget_is_reached_exactly_and_not_exceeded_on_rerun(storage) -> None:
    name = unique("Budget")
    first = run_study(storage, name, quadratic, SearchBudget(trials=5), seed=1, run_tag="run-a")
    assert (first.finished_trials, first.trials_run, first.interrupted_trials) == (5, 5, 0)
    trials = trials_of(storage, name)
    assert len(trials) == 5
    assert all(trial.user_attrs[RUN_TAG_ATTR] == "run-a" for trial in trials)
    best = min(trials, key=lambda trial: trial.value)
    assert first.best_params == best.params and first.best_value == best.value

    again = run_study(storage, name, quadratic, SearchBudget(trials=5), seed=1)
    assert (again.finished_trials, again.trials_run) == (5, 0)
    assert again.best_params == first.best_params

    more = run_study(storage, name, quadratic, SearchBudget(trials=7), seed=1)
    assert (more.finished_trials, more.trials_run) == (7, 2)
    assert len(trials_of(storage, name)) == 7


def test_keyboard_interrupt_then_resume_ends_with_exactly_the_budget(storage) -> None:
    name = unique("Interrupt")
    calls = 0

    def interrupted_at_fourth(trial: optuna.Trial) -> float:
        nonlocal calls
        calls += 1
        if calls == 4:
            trial.suggest_float("x", -10.0, 10.0)
            raise KeyboardInterrupt
        return quadratic(trial)

    with pytest.raises(KeyboardInterrupt):
        run_study(storage, name, interrupted_at_fourth, SearchBudget(trials=6), seed=2)
    trials = trials_of(storage, name)
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL]
    assert trials[3].user_attrs[INTERRUPTED_ATTR] is True

    resumed = run_study(storage, name, quadratic, SearchBudget(trials=6), seed=2)
    assert (resumed.finished_trials, resumed.trials_run) == (6, 3)
    completed = [t for t in trials_of(storage, name) if t.state == TrialState.COMPLETE]
    assert len(completed) == 6
    # The same seed on resume would replay the first call's random startup points.
    assert len({trial.params["x"] for trial in completed}) == 6


def test_timeout_cut_then_resume_ends_with_exactly_the_budget(storage) -> None:
    name = unique("Timeout")

    def slow(trial: optuna.Trial) -> float:
        time.sleep(0.15)
        return quadratic(trial)

    cut = run_study(storage, name, slow, SearchBudget(trials=8, timeout_seconds=0.4), seed=3)
    assert 1 <= cut.trials_run < 8
    assert cut.finished_trials == cut.trials_run

    resumed = run_study(storage, name, quadratic, SearchBudget(trials=8), seed=3)
    assert resumed.trials_run == 8 - cut.trials_run
    assert resumed.finished_trials == 8
    assert len(trials_of(storage, name)) == 8


def test_running_trial_of_a_killed_attempt_is_failed_and_not_counted(storage) -> None:
    name = unique("Killed")
    run_study(storage, name, quadratic, SearchBudget(trials=2), seed=4)
    # A worker SIGKILLed mid-trial leaves its trial RUNNING forever.
    orphan = optuna.load_study(study_name=name, storage=storage).ask()
    orphan.suggest_float("x", -10.0, 10.0)

    outcome = run_study(storage, name, quadratic, SearchBudget(trials=4), seed=4)
    assert outcome.interrupted_trials == 1
    assert (outcome.finished_trials, outcome.trials_run) == (4, 2)
    trials = trials_of(storage, name)
    assert len(trials) == 5
    assert trials[orphan.number].state == TrialState.FAIL
    assert trials[orphan.number].user_attrs[INTERRUPTED_ATTR] is True
    assert not any(trial.state == TrialState.RUNNING for trial in trials)


def test_system_exit_propagates_and_its_trial_is_rerun_later(storage) -> None:
    # Lightning turns Ctrl+C during fit into SystemExit, which Optuna leaves RUNNING.
    name = unique("Exit")

    def exits(trial: optuna.Trial) -> float:
        quadratic(trial)
        raise SystemExit(1)

    with pytest.raises(SystemExit):
        run_study(storage, name, exits, SearchBudget(trials=3), seed=5)
    assert [trial.state for trial in trials_of(storage, name)] == [TrialState.RUNNING]

    outcome = run_study(storage, name, quadratic, SearchBudget(trials=3), seed=5)
    assert (outcome.interrupted_trials, outcome.finished_trials, outcome.trials_run) == (1, 3, 3)


def test_objective_errors_are_failed_trials_that_count(storage) -> None:
    name = unique("Errors")

    def flaky(trial: optuna.Trial) -> float:
        value = quadratic(trial)
        if trial.number % 2 == 1:
            raise ValueError("out of memory for this configuration")
        return value

    outcome = run_study(storage, name, flaky, SearchBudget(trials=4), seed=6)
    assert (outcome.finished_trials, outcome.trials_run) == (4, 4)
    trials = trials_of(storage, name)
    assert [trial.state for trial in trials] == [TrialState.COMPLETE, TrialState.FAIL] * 2
    assert "out of memory" in trials[1].user_attrs[ERROR_ATTR]
    assert INTERRUPTED_ATTR not in trials[1].user_attrs
    assert outcome.best_value == min(trials[0].value, trials[2].value)

    assert run_study(storage, name, flaky, SearchBudget(trials=4), seed=6).trials_run == 0


def test_no_completed_trial_gives_an_empty_best(storage) -> None:
    def broken(trial: optuna.Trial) -> float:
        raise ValueError("bug")

    outcome = run_study(storage, unique("Broken"), broken, SearchBudget(trials=2), seed=7)
    assert (outcome.best_params, outcome.best_value, outcome.finished_trials) == ({}, None, 2)


def test_warm_start_enqueues_the_previous_windows_best_first(storage) -> None:
    group = f"g{uuid.uuid4().hex[:8]}"
    previous = study_name("Warm", group, "2016-10-23")
    before = run_study(storage, previous, quadratic, SearchBudget(trials=6), seed=8)
    ranked = sorted(
        (t for t in trials_of(storage, previous) if t.state == TrialState.COMPLETE), key=lambda t: t.value
    )

    found = previous_window_study(storage, "Warm", group, "2016-10-30")
    assert found == previous
    name = study_name("Warm", group, "2016-10-30")
    budget = SearchBudget(trials=4, warm_start_trials=2)
    outcome = run_study(storage, name, quadratic, budget, seed=8, previous_study=found)
    assert outcome.warm_started_from == previous
    assert outcome.enqueued == [ranked[0].params, ranked[1].params]
    trials = trials_of(storage, name)
    assert trials[0].params == before.best_params == ranked[0].params
    assert trials[0].value == before.best_value
    assert trials[1].params == ranked[1].params

    # A resumed study already has trials: nothing is enqueued twice.
    again = run_study(storage, name, quadratic, SearchBudget(trials=5), seed=8, previous_study=found)
    assert (again.warm_started_from, again.enqueued, again.trials_run) == (None, [], 1)


def test_warm_start_from_a_missing_study_is_a_cold_start(storage) -> None:
    outcome = run_study(
        storage, unique("Cold"), quadratic, SearchBudget(trials=1), seed=9, previous_study="Cold/x/2000-01-01"
    )
    assert (outcome.warm_started_from, outcome.enqueued, outcome.finished_trials) == (None, [], 1)


def test_previous_window_study_stays_within_family_and_group_and_the_past(storage) -> None:
    group = f"g{uuid.uuid4().hex[:8]}"
    for family, grp, window in [
        ("Prev", group, "2016-10-09"),
        ("Prev", group, "2016-10-16"),
        ("Prev", group, "2016-10-23"),  # the window itself
        ("Prev", group, "2016-10-30"),  # later
        ("Prev", f"{group}x", "2016-10-20"),  # other group sharing a prefix
        ("PrevOther", group, "2016-10-22"),  # other family
    ]:
        optuna.create_study(storage=storage, study_name=study_name(family, grp, window))

    assert previous_window_study(storage, "Prev", group, "2016-10-23") == f"Prev/{group}/2016-10-16"
    assert previous_window_study(storage, "Prev", group, "2016-11-06") == f"Prev/{group}/2016-10-30"
    assert previous_window_study(storage, "Prev", group, "2016-10-09") is None
    assert previous_window_study(storage, "Prev", "nowhere", "2016-10-23") is None


def test_a_second_concurrent_run_of_the_same_study_is_refused(storage) -> None:
    name = unique("Busy")
    refused: list[BaseException] = []

    def starts_a_duplicate(trial: optuna.Trial) -> float:
        try:
            run_study(storage, name, quadratic, SearchBudget(trials=3), seed=10)
        except StudyBusyError as error:
            refused.append(error)
        return quadratic(trial)

    outcome = run_study(storage, name, starts_a_duplicate, SearchBudget(trials=2), seed=10)
    assert len(refused) == 2
    assert (outcome.finished_trials, outcome.interrupted_trials) == (2, 0)
    # The lock is released afterwards.
    assert run_study(storage, name, quadratic, SearchBudget(trials=3), seed=10).trials_run == 1


def test_direction_mismatch_with_an_existing_study_is_an_error(storage) -> None:
    name = unique("Direction")
    run_study(storage, name, quadratic, SearchBudget(trials=1), seed=11)
    with pytest.raises(ValueError, match="direction"):
        run_study(storage, name, quadratic, SearchBudget(trials=2), seed=11, direction="maximize")


def _fit_constant_loss_model(trial: optuna.Trial, monitor: str) -> None:
    """Train a tiny real Lightning module whose validation loss stays high."""
    import pytorch_lightning as pl
    import torch

    class Constant(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.weight * batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("valid_loss", 1.0 + 0.0 * self.weight.sum(), on_epoch=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(16, 1)), batch_size=2)
    trainer = pl.Trainer(
        max_steps=8,
        val_check_interval=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[pruning_callback(trial, monitor=monitor)],
    )
    trainer.fit(Constant(), train_dataloaders=data, val_dataloaders=data)


def test_pruning_callback_prunes_inside_a_real_trainer(storage) -> None:
    name = unique("Prune")

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 0:  # a good trial to compare against, reporting at every step
            for step in range(10):
                trial.report(0.0, step)
            return 0.0
        _fit_constant_loss_model(trial, monitor="valid_loss")
        return 1.0

    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    outcome = run_study(storage, name, objective, SearchBudget(trials=2), seed=12, pruner=pruner)
    assert outcome.finished_trials == 2
    pruned = trials_of(storage, name)[1]
    assert pruned.state == TrialState.PRUNED
    # Reported at the trainer's global step, not during the sanity check (step 0).
    assert pruned.intermediate_values == {2: 1.0}


def test_pruning_callback_without_the_metric_reports_nothing(storage) -> None:
    name = unique("NoMetric")

    def objective(trial: optuna.Trial) -> float:
        _fit_constant_loss_model(trial, monitor="absent_metric")
        return 1.0

    outcome = run_study(storage, name, objective, SearchBudget(trials=1), seed=13)
    trial = trials_of(storage, name)[0]
    assert (trial.state, trial.intermediate_values, outcome.best_value) == (TrialState.COMPLETE, {}, 1.0)


def test_pruning_callback_copies_share_the_trial(storage) -> None:
    # neuralforecast deep-copies models with their trainer kwargs, callbacks included.
    import copy

    trial = optuna.create_study(storage=storage, study_name=unique("Copy")).ask()
    callback = pruning_callback(trial, monitor="ptl/val_loss")
    copied = copy.deepcopy({"callbacks": [callback]})["callbacks"][0]
    assert copied is not callback
    assert (copied.trial, copied.monitor, type(copied)) == (trial, "ptl/val_loss", type(callback))
