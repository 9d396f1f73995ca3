"""Sensors, the cascade, the schedule and window backfills against a real PostgreSQL instance.

The new-data sensor is evaluated as the daemon evaluates it and its requests are executed;
the end-to-end run through the daemon itself is `test_daemon.py` (marked `slow`).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from forecasting_pipeline import operations
from forecasting_pipeline.assets.conventions import advisory_locks
from forecasting_pipeline.automation.cascade import publishing_span, retraining_cascade_sensor
from forecasting_pipeline.automation.new_data import new_data_sensor
from forecasting_pipeline.automation.schedules import closed_window, weekly_model_update
from forecasting_pipeline.automation.tags import RANGE_END_TAG, RANGE_START_TAG, TRIGGER_TAG
from forecasting_pipeline.definitions import defs
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.transient_errors import MAX_RETRIES, is_transient
from forecasting_pipeline_tests.automation_story import (
    NEW_SERIES,
    land_first_weeks,
    land_new_weeks_and_series,
)
from forecasting_pipeline_tests.conftest import query_frame, scalar, series_keys
from forecasting_pipeline_tests.dagster_processes import BACKFILL_MUTATION


def _sensor_context(instance, deployment, name: str):
    return build_sensor_context(
        instance=instance,
        sensor_name=name,
        resources={"database": DatabaseResource(url=deployment.database_url)},
        definitions=defs,
    )


def _evaluate_new_data(instance, deployment) -> SensorResult | SkipReason:
    return new_data_sensor(_sensor_context(instance, deployment, "new_data_sensor"))


def _apply(instance, result: SensorResult) -> list[str]:
    """What the daemon does with a result: add the partitions, then run each request."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    run_ids = []
    for request in result.run_requests or []:
        outcome = defs.resolve_job_def(request.job_name).execute_in_process(
            instance=instance, tags=request.tags, raise_on_error=False
        )
        assert outcome.success, request.tags
        run_ids.append(outcome.run_id)
    return run_ids


def _run_status_context(instance, outcome, sensor_name: str, event_type, deployment=None):
    """The context a run-status sensor gets for `outcome`'s run, as the daemon builds it."""
    from dagster import build_run_status_sensor_context

    event = next(e for e in outcome.all_events if e.event_type == event_type)
    return build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=outcome.dagster_run,
        resources={"database": DatabaseResource(url=deployment.database_url)} if deployment else None,
    )


def _cascade_backfills(instance) -> list:
    return [b for b in instance.get_backfills() if b.tags.get(TRIGGER_TAG) == "retraining_cascade_sensor"]


def _requested_cells(instance, result: SensorResult) -> set[tuple[str, str]]:
    """(window, series key) of every cell the run requests cover."""
    from forecasting_pipeline.partitions import series_date_partitions

    cells = set()
    for request in result.run_requests:
        keys = series_date_partitions.get_partition_keys_in_range(
            _range(request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]),
            dynamic_partitions_store=instance,
        )
        cells |= {tuple(str(k).split("|", 1)) for k in keys}
    return cells


def _range(start: str, end: str):
    from dagster import PartitionKeyRange

    return PartitionKeyRange(start, end)


def _cells_with_new_data(db_engine) -> set[tuple[str, str]]:
    rows = query_frame(
        db_engine,
        "SELECT DISTINCT window_key, series_id FROM forecasting.cascade_queue WHERE request_id IS NULL",
    )
    return set(rows.itertuples(index=False, name=None))


@pytest.fixture(scope="module")
def first_weeks(deployment, instance, db_engine):
    """The first file, staged and ingested by the sensor's requests."""
    # The sensor reads its settings from the environment, as in the daemon.
    os.environ["FP_LANDING_DIR"] = str(deployment.settings.landing_dir)
    land_first_weeks(deployment.settings.landing_dir)
    result = _evaluate_new_data(instance, deployment)
    assert isinstance(result, SensorResult)
    _apply(instance, result)
    yield result
    os.environ.pop("FP_LANDING_DIR", None)


def test_sensor_ingests_exactly_the_new_cells_and_then_asks_for_nothing(
    first_weeks, deployment, instance, db_engine
):
    (added,) = first_weeks.dynamic_partitions_requests
    assert sorted(added.partition_keys) == ["BE", "FR"]
    assert scalar(db_engine, "SELECT max(ts) FROM forecasting.observations") == datetime(2016, 10, 22, 23)
    # Nothing new: no request, and not even a hash of the unchanged file.
    again = _evaluate_new_data(instance, deployment)
    assert isinstance(again, SkipReason)

    land_new_weeks_and_series(deployment.settings.landing_dir)
    result = _evaluate_new_data(instance, deployment)
    assert isinstance(result, SensorResult)
    (added,) = result.dynamic_partitions_requests
    assert list(added.partition_keys) == [NEW_SERIES]
    instance.add_dynamic_partitions("series", [NEW_SERIES])  # as the daemon does before the runs
    requested = _requested_cells(instance, result)
    # The new series' every window, and the existing series' windows from the cut on: only those.
    windows = {w for w, _ in requested}
    assert {(w, NEW_SERIES) for w in windows} <= requested
    assert {(w, s) for w, s in requested if s != NEW_SERIES} == {
        (w, s) for w in ("2016-10-23", "2016-10-30") for s in ("BE", "FR")
    }
    # The daemon would see the same run keys again (and skip them) until the runs ran.
    pending = _evaluate_new_data(instance, deployment)
    assert {r.run_key for r in pending.run_requests} == {r.run_key for r in result.run_requests}
    _apply(instance, result)
    assert isinstance(_evaluate_new_data(instance, deployment), SkipReason)
    assert series_keys(instance) == ["BE", "FR", NEW_SERIES]
    assert scalar(db_engine, "SELECT count(DISTINCT series_id) FROM forecasting.observations") == 3


def test_a_bad_file_is_reported_set_aside_and_not_retried(first_weeks, deployment, instance, db_engine):
    bad = deployment.settings.landing_dir / "broken.parquet"
    bad.write_bytes(b"this is not parquet")
    result = _evaluate_new_data(instance, deployment)
    assert isinstance(result, SensorResult) and not result.run_requests
    (check,) = [e for e in result.asset_events if isinstance(e, AssetCheckEvaluation)]
    assert check.check_name == "landed_files_readable" and not check.passed
    assert "broken.parquet" in check.metadata["reasons"].value
    assert not bad.exists() and (deployment.settings.rejected_dir / "broken.parquet").exists()
    assert isinstance(_evaluate_new_data(instance, deployment), SkipReason)
    reason = scalar(
        db_engine, "SELECT reason FROM forecasting.landed_files WHERE file_name = 'broken.parquet'"
    )
    assert reason


def test_cascade_asks_once_for_exactly_what_depends_on_the_changed_cells(
    first_weeks, deployment, instance, db_engine
):
    queued = _cells_with_new_data(db_engine)
    assert queued, "ingestion queues the cells it changed"
    skip = retraining_cascade_sensor(_sensor_context(instance, deployment, "retraining_cascade_sensor"))
    assert "submitted" in skip.skip_message
    (backfill,) = _cascade_backfills(instance)
    subset = backfill.asset_backfill_data.target_subset
    by_asset = {
        key.to_user_string(): set(subset.get_partitions_subset(key).get_partition_keys())
        for key in subset.asset_keys
    }
    cells = {f"{w}|{s}" for w, s in queued}
    assert by_asset["feature_table"] == cells == by_asset["granger_study"] == by_asset["forecast_accuracy"]
    newest = max(w for w, _ in queued)
    assert by_asset["training_panel"] == {newest} == by_asset["global_models"]
    # Forecasts are republished for the span of the changed series (here: all of them).
    changed_series = {s for _, s in queued}
    assert changed_series == set(series_keys(instance))
    published = {f"{newest}|{key}" for key in changed_series}
    assert by_asset["predictions"] == published == by_asset["backtest_folds"]
    assert by_asset["correlation_study"] == {w for w, _ in queued}
    assert "raw_observations" not in by_asset
    # Submitted once: the next tick finds the queue empty and the request handed over.
    retraining_cascade_sensor(_sensor_context(instance, deployment, "retraining_cascade_sensor"))
    assert len(_cascade_backfills(instance)) == 1
    assert scalar(db_engine, "SELECT count(*) FROM forecasting.cascade_queue") == 0


def test_a_window_backfill_materializes_all_its_cells_and_only_them(first_weeks, instance):
    summary = operations.backfill(
        instance, "2016-10-09", "2016-10-16", ["feature_table"], progress=lambda _: None
    )
    assert len(summary.runs) == 1
    (run_id,) = [r[3] for r in summary.runs]
    keys = {
        str(record.asset_materialization.partition)
        for record in instance.fetch_materializations(AssetKey("feature_table"), limit=1000).records
        if record.run_id == run_id
    }
    assert keys == {f"{w}|{s}" for w in ("2016-10-09", "2016-10-16") for s in series_keys(instance)}


def test_the_schedule_targets_the_window_that_just_closed_in_its_time_zone():
    auckland = datetime(2016, 12, 25, 3, tzinfo=ZoneInfo("Pacific/Auckland"))  # Sunday morning there
    assert closed_window(auckland) == "2016-12-18"
    assert closed_window(auckland.astimezone(ZoneInfo("UTC"))) == "2016-12-11"  # still Saturday in UTC
    request = weekly_model_update(
        build_schedule_context(scheduled_execution_time=datetime(2016, 10, 31, 3, tzinfo=ZoneInfo("UTC")))
    )
    assert request.partition_key == "2016-10-23"
    assert request.tags["forecasting-pipeline/publish-after"] == "2016-10-23"


def test_overlapping_steps_of_one_asset_and_window_take_turns(first_weeks, deployment, db_engine):
    """A second writer of the same asset and window waits for the first; another window does not."""
    database = DatabaseResource(url=deployment.database_url)
    order: list[str] = []

    def writer(window: str, name: str) -> None:
        with advisory_locks(database, "correlation_study", [window]):
            order.append(name)

    with advisory_locks(database, "correlation_study", ["2016-10-16", "2016-10-09"]):
        same = threading.Thread(target=writer, args=("2016-10-16", "same window"))
        other = threading.Thread(target=writer, args=("2016-10-23", "other window"))
        same.start()
        other.start()
        other.join(timeout=30)
        time.sleep(1.0)
        order.append("first")
    same.join(timeout=30)
    assert order == ["other window", "first", "same window"]
    with db_engine.connect() as conn:
        # This module's database only: other databases on the server may hold locks of their own.
        held = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalar_one()
    assert held == 0


def test_transient_failures_are_retried_with_backoff_and_others_fail_at_once(
    first_weeks, instance, deployment
):
    from dagster import DagsterEventType, materialize

    from forecasting_pipeline.assets.monitoring import forecast_accuracy

    dropped = OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    assert is_transient(dropped) and not is_transient(ValueError("bad input"))

    def retries(database_url: str, partition: str) -> int:
        result = materialize(
            [forecast_accuracy],
            partition_key=partition,
            resources={**defs.resources, "database": DatabaseResource(url=database_url)},
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        return sum(e.event_type == DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)

    # Nothing listens on port 1: every attempt loses its connection, and is retried until the cap.
    assert retries("postgresql+psycopg2://postgres@127.0.0.1:1/none", "2016-10-16|FR") == MAX_RETRIES
    instance.add_dynamic_partitions("series", ["unregistered"])
    assert retries(deployment.database_url, "2016-10-16|unregistered") == 0
    instance.delete_dynamic_partition("series", "unregistered")


def test_failed_runs_are_recorded_with_their_partitions_and_error(
    first_weeks, deployment, instance, db_engine
):
    from dagster import DagsterEventType

    from forecasting_pipeline.automation.failures import run_failure_recorder

    instance.add_dynamic_partitions("series", ["ghost"])
    outcome = defs.resolve_job_def("ingest_observations").execute_in_process(
        instance=instance, partition_key="2016-10-16|ghost", raise_on_error=False
    )
    assert not outcome.success
    context = _run_status_context(
        instance, outcome, "run_failure_recorder", DagsterEventType.RUN_FAILURE, deployment
    ).for_run_failure()
    run_failure_recorder(context)
    row = query_frame(
        db_engine, "SELECT * FROM forecasting.run_failures WHERE dagster_run_id = :r", r=outcome.run_id
    ).iloc[0]
    assert row.job_name == "ingest_observations" and row.partition_range == "2016-10-16|ghost"
    assert "no registered series" in row.message and list(row.failed_steps) == ["raw_observations"]
    instance.delete_dynamic_partition("series", "ghost")


def test_unchanged_files_are_not_even_hashed_again(first_weeks, deployment, db_engine):
    from forecasting_pipeline.automation.new_data import scan_landing
    from forecasting_pipeline.storage.automation import unseen_paths

    listing = scan_landing(deployment.settings.landing_dir)
    with db_engine.connect() as conn:
        assert unseen_paths(conn, listing).height == 0
        touched = listing.with_columns(pl.col("modified_ns") + 1)
        assert unseen_paths(conn, touched).height == listing.height


def test_replay_cuts_the_data_into_a_backlog_and_whole_weeks():
    from forecasting_pipeline.replay import plan_replay
    from forecasting_pipeline_tests.automation_story import bundled

    frame = bundled()
    plan = plan_replay(frame, weeks=3, history_windows=4)
    starts = [start.isoformat() for start, _ in plan.weeks]
    assert starts == ["2016-10-16", "2016-10-23", "2016-10-30"]
    assert plan.backlog.height + sum(rows.height for _, rows in plan.weeks) == frame.height
    assert plan.backlog["ds"].max() < datetime(2016, 10, 16)
    for start, rows in plan.weeks:
        assert rows["ds"].min() >= datetime.combine(start, datetime.min.time())
    assert plan.calendar.start.isoformat() == "2016-09-18" and plan.calendar.end.isoformat() == "2016-11-06"


def test_a_scheduled_retraining_is_followed_by_publishing_every_series_of_its_window(first_weeks, instance):
    from dagster import DagsterEventType

    from forecasting_pipeline.automation.schedules import publish_after_model_update
    from forecasting_pipeline.automation.tags import PUBLISH_AFTER_TAG

    def follow_up(tags: dict[str, str]):
        outcome = defs.resolve_job_def("version_observation_history").execute_in_process(
            instance=instance, partition_key="2016-10-16", tags=tags
        )
        context = _run_status_context(
            instance, outcome, "publish_after_model_update", DagsterEventType.RUN_SUCCESS
        )
        return publish_after_model_update(context), outcome.run_id

    request, run_id = follow_up({PUBLISH_AFTER_TAG: "2016-10-16"})
    keys = series_keys(instance)
    assert request.tags[RANGE_START_TAG] == f"2016-10-16|{keys[0]}"
    assert request.tags[RANGE_END_TAG] == f"2016-10-16|{keys[-1]}"
    assert request.run_key == f"publish-{run_id}"
    skipped, _ = follow_up({})
    assert isinstance(skipped, SkipReason)


def test_the_sql_source_is_watched_too_and_an_unchanged_result_does_nothing(
    first_weeks, deployment, instance, db_engine
):
    with db_engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE public.sql_prices (unique_id text, ds timestamp, y double precision)"
        )
        conn.exec_driver_sql(
            "INSERT INTO public.sql_prices SELECT 'SQL-1', ts, y FROM forecasting.observations "
            "WHERE series_id = 'FR' AND ts >= '2016-10-09' AND ts < '2016-10-16'"
        )
    os.environ.update(FP_SOURCE_URL=deployment.database_url, FP_SOURCE_QUERY="public.sql_prices")
    try:
        result = _evaluate_new_data(instance, deployment)
        assert isinstance(result, SensorResult)
        (added,) = result.dynamic_partitions_requests
        assert list(added.partition_keys) == ["SQL-1"]
        _apply(instance, result)
        snapshot = next(deployment.settings.landing_dir.glob("sql-*.parquet"))
        modified = snapshot.stat().st_mtime_ns
        assert isinstance(_evaluate_new_data(instance, deployment), SkipReason)
        assert snapshot.stat().st_mtime_ns == modified  # unchanged result: file left alone
    finally:
        os.environ.pop("FP_SOURCE_URL")
        os.environ.pop("FP_SOURCE_QUERY")
    assert scalar(db_engine, "SELECT count(*) FROM forecasting.observations WHERE series_id = 'SQL-1'") == 168


@pytest.mark.slow  # starts a gRPC code server, as the webserver does: the slow step
def test_a_graphql_backfill_over_windows_targets_every_series_in_them(first_weeks, instance):
    """The README's GraphQL mutation, against the code location the UI loads."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    from forecasting_pipeline.settings import REPO_ROOT

    keys = series_keys(instance)
    cells = sorted(f"{w}|{k}" for w in ("2016-10-09", "2016-10-16") for k in keys)
    requests = {
        ("feature_table", "granger_study"): cells,
        ("correlation_study",): ["2016-10-09", "2016-10-16"],
    }
    with define_out_of_process_context(str(REPO_ROOT / "workspace.yaml"), None, instance) as context:
        for assets, partitions in requests.items():
            result = execute_dagster_graphql(
                context,
                BACKFILL_MUTATION,
                variables={"assets": [{"path": [a]} for a in assets], "partitions": partitions},
            )
            launched = result.data["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            target = instance.get_backfill(launched["backfillId"]).asset_backfill_data.target_subset
            for asset in assets:
                assert set(target.get_partitions_subset(AssetKey(asset)).get_partition_keys()) == set(
                    partitions
                )


def test_the_cascade_publishes_the_span_of_the_changed_series_in_partition_order():
    order = [f"s{i}" for i in range(10)]
    # One run over s2..s7 instead of three (each training the neural backtest again).
    assert publishing_span(["s7", "s2", "s5"], order) == order[2:8]
    assert publishing_span(["s4"], order) == ["s4"]
