"""Tuning per (family, group, window) in PostgreSQL, through the assets: one neural and one
statistical family are tuned and trained per window; a study cut short ends with exactly its
budget when run again; a window's study starts from the previous window's best; the trained
versions use the tuned parameters; a failed database write leaves no registry version behind."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from forecasting_pipeline.automation import launch
from forecasting_pipeline.modeling.search import optuna_storage, study_name
from forecasting_pipeline_tests.conftest import TINY_GLOBAL_MODEL, land_and_ingest

FIRST, SECOND = "2016-10-23", "2016-10-30"
FAMILIES = ["NHITS", "AutoTheta"]


def _train(instance, window: str, **search) -> object:
    config = {
        "ops": {
            "hyperparameter_search": {
                "config": {"families": FAMILIES, "trials": 2, "trial_max_steps": 3, **search}
            },
            # The tuned input size and batch size are kept: only the training length is set.
            "global_models": {"config": {"max_steps": TINY_GLOBAL_MODEL["max_steps"]}},
            "local_models": {"config": {"families": ["AutoTheta"]}},
        }
    }
    return launch.train_window(instance, window, run_config=config)


def _study(deployment, family: str, window: str):
    import optuna

    return optuna.load_study(
        study_name=study_name(family, "hourly", window), storage=optuna_storage(deployment.database_url)
    )


@pytest.fixture(scope="module")
def tuned(deployment, instance):
    land_and_ingest(deployment, instance)
    first = _train(instance, FIRST)
    assert first.success
    # The second window's studies are cut short by their time budget after their first trial.
    cut = _train(instance, SECOND, trials=3, timeout_seconds=0.01)
    assert cut.success
    resumed = _train(instance, SECOND, trials=3)
    assert resumed.success
    return first, cut, resumed


def test_a_study_cut_short_ends_with_exactly_its_budget(tuned, deployment, db_engine):
    with db_engine.connect() as conn:
        experiments = conn.execute(
            text(
                "SELECT model_name, window_key, trial_budget, finished_trials, warm_started_from "
                "FROM forecasting.experiments ORDER BY window_key, model_name"
            )
        ).all()
    assert experiments == [
        ("AutoTheta", FIRST, 2, 2, None),
        ("NHITS", FIRST, 2, 2, None),
        ("AutoTheta", SECOND, 3, 3, study_name("AutoTheta", "hourly", FIRST)),
        ("NHITS", SECOND, 3, 3, study_name("NHITS", "hourly", FIRST)),
    ]
    import optuna

    for family in FAMILIES:
        trials = _study(deployment, family, SECOND).get_trials(deepcopy=False)
        finished = [t for t in trials if t.state != optuna.trial.TrialState.RUNNING]
        assert len(finished) == 3, family
        # The run that was cut short ran one trial; the resumed run the remaining two.
        runs = [t.user_attrs.get("run_tag") for t in trials]
        assert len(set(runs)) == 2 and runs.count(runs[0]) == 1, family


def test_the_previous_windows_best_trial_is_tried_first(tuned, deployment):
    for family in FAMILIES:
        previous_best = _study(deployment, family, FIRST).best_trial.params
        first_trial = _study(deployment, family, SECOND).trials[0]
        assert first_trial.params == previous_best, family


def test_trained_versions_use_the_tuned_parameters(tuned, deployment, db_engine):
    with db_engine.connect() as conn:
        params = dict(
            conn.execute(
                text(
                    "SELECT model_name, params FROM forecasting.models WHERE window_key = :w "
                    "AND model_name = ANY(:names) ORDER BY model_id"
                ),
                {"w": SECOND, "names": FAMILIES},
            ).all()
        )
    for family in FAMILIES:
        best = _study(deployment, family, SECOND).best_trial.params
        assert {key: params[family][key] for key in best if key in params[family]} == best, family
    assert (
        params["NHITS"]["learning_rate"]
        == _study(deployment, "NHITS", SECOND).best_trial.params["learning_rate"]
    )


def test_future_known_drivers_are_future_inputs_where_their_values_are_stored(tuned, db_engine):
    with db_engine.connect() as conn:
        inputs = set(
            conn.execute(
                text(
                    "SELECT window_key, params->>'futr_exog', params->>'hist_exog' FROM forecasting.models "
                    "WHERE model_name = 'NHITS'"
                )
            ).all()
        )
    drivers = '["gen_forecast", "system_load", "week_day"]'
    # The first window's next day is stored (it is the second window's data): future inputs.
    # After the last stored day there are no values ahead: the same drivers, as historical inputs.
    assert inputs == {(FIRST, drivers, "[]"), (SECOND, "[]", drivers)}


def test_tuning_and_training_record_their_cost(tuned, db_engine):
    with db_engine.connect() as conn:
        stages = dict(
            conn.execute(text("SELECT stage, count(*) FROM forecasting.resource_stats GROUP BY stage")).all()
        )
    # Tuning: two families × three runs that ran trials; training: both families in each run.
    assert stages["tuning"] == 6 and stages["training"] == 6


def test_a_failed_database_write_leaves_no_registry_version(tuned, deployment, db_engine, instance):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=deployment.settings.default_mlflow_tracking_uri)
    before = {v.version for v in client.search_model_versions("name = 'NHITS-hourly'")}
    with db_engine.begin() as conn:
        conn.execute(
            text(
                """
                CREATE FUNCTION forecasting.refuse_models() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN RAISE EXCEPTION 'models table is read-only in this test'; END $$;
                CREATE TRIGGER refuse_models BEFORE INSERT ON forecasting.models
                    FOR EACH ROW EXECUTE FUNCTION forecasting.refuse_models();
                """
            )
        )
    try:
        failed = _train(instance, SECOND, trials=3)
    finally:
        with db_engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_models ON forecasting.models"))
            conn.execute(text("DROP FUNCTION forecasting.refuse_models()"))
    assert not failed.success
    after = {v.version for v in client.search_model_versions("name = 'NHITS-hourly'")}
    assert after == before
    orphaned = client.search_runs(
        [client.get_experiment_by_name("forecasting-pipeline").experiment_id],
        filter_string="tags.dagster_run_id = '" + failed.run_id + "'",
    )
    # Every model the run registered (the neural one and the statistical families) was undone.
    assert len(orphaned) >= 2
    assert {run.data.tags.get("forecasting_pipeline.orphaned", "")[:22] for run in orphaned} == {
        "database write failed:"
    }
    assert all(run.info.status == "FINISHED" for run in orphaned)
