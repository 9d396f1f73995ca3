"""Forecast history: after new data arrives, forecasting again keeps the earlier origin's rows
beside the new ones; re-running the same origin changes no count; adding a family leaves the
other families' rows intact."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from dagster import AssetKey
from sqlalchemy import text

from forecasting_pipeline import operations
from forecasting_pipeline.datasets import EPF_FR_BE
from forecasting_pipeline.definitions import defs
from forecasting_pipeline_tests.conftest import FAMILIES_ONLY_BACKTEST, TINY_GLOBAL_MODEL, scalar, series_keys

FIRST_WINDOW, SECOND_WINDOW = "2016-10-23", "2016-10-30"
SPLIT = "2016-10-24"  # the first delivery ends on Sunday 2016-10-23 23:00
FAMILIES = {
    "global_model_config": TINY_GLOBAL_MODEL,
    "search_config": {"families": []},
    "backtest_config": FAMILIES_ONLY_BACKTEST,
}
LOCAL = {"families": ["SeasonalNaive"]}

# One process fitting one local family for a window: two of these run at the same time.
FIT_ONE_FAMILY = textwrap.dedent(
    """
    import sys
    from dagster import AssetKey, DagsterInstance
    from forecasting_pipeline.definitions import defs

    window, family = sys.argv[1:3]
    result = defs.resolve_job_def("train_models").execute_in_process(
        instance=DagsterInstance.get(),
        partition_key=window,
        asset_selection=[AssetKey("local_models")],
        run_config={"ops": {"local_models": {"config": {"families": [family]}}}},
        raise_on_error=False,
    )
    sys.exit(0 if result.success else 1)
    """
)


def _rows(db_engine) -> pd.DataFrame:
    with db_engine.connect() as conn:
        return pd.read_sql(
            text(
                "SELECT series_id, model_name, cutoff, step, yhat, dagster_run_id "
                "FROM forecasting.predictions "
                "ORDER BY series_id, model_name, cutoff, step"
            ),
            conn,
        )


def _deliver(deployment, instance, rows: pd.DataFrame, name: str):
    landing = deployment.settings.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    rows.to_csv(landing / name, index=False)
    return operations.ingest(instance, deployment, progress=lambda _: None)


@pytest.fixture(scope="module")
def history(deployment, instance, db_engine):
    prices = EPF_FR_BE.load()
    first = _deliver(deployment, instance, prices[prices["ds"] < SPLIT], "prices_part1.csv")
    assert first.latest_window == FIRST_WINDOW
    operations.forecast(instance, FIRST_WINDOW, series_keys(instance), **FAMILIES, local_model_config=LOCAL)
    after_first = _rows(db_engine)
    second = _deliver(deployment, instance, prices[prices["ds"] >= SPLIT], "prices_part2.csv")
    assert second.latest_window == SECOND_WINDOW
    operations.forecast(instance, SECOND_WINDOW, series_keys(instance), **FAMILIES, local_model_config=LOCAL)
    return after_first, _rows(db_engine)


def test_a_later_origin_adds_rows_beside_the_earlier_ones(history):
    after_first, after_second = history
    per_origin = after_second.groupby("cutoff").size().to_dict()
    assert per_origin == {
        pd.Timestamp("2016-10-23 23:00"): 2 * 2 * 24,
        pd.Timestamp("2016-10-31 23:00"): 2 * 2 * 24,
    }
    kept = after_second[after_second["cutoff"] == pd.Timestamp("2016-10-23 23:00")].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, after_first)


def test_the_current_view_serves_the_newest_origin(history, db_engine):
    current = scalar(
        db_engine, "SELECT count(*) FROM forecasting.current_predictions WHERE cutoff = '2016-10-31 23:00'"
    )
    assert current == scalar(db_engine, "SELECT count(*) FROM forecasting.current_predictions") == 2 * 2 * 24


def test_rerunning_the_same_origin_changes_no_count(history, instance, db_engine):
    _, before = history
    operations.forecast(instance, SECOND_WINDOW, series_keys(instance), **FAMILIES, local_model_config=LOCAL)
    after = _rows(db_engine)
    assert len(after) == len(before)
    assert (
        after.groupby(["model_name", "cutoff"]).size().equals(before.groupby(["model_name", "cutoff"]).size())
    )


def test_adding_a_family_leaves_the_other_families_rows_intact(history, instance, db_engine):
    before = _rows(db_engine)
    result = defs.resolve_job_def("train_models").execute_in_process(
        instance=instance,
        partition_key=SECOND_WINDOW,
        asset_selection=[AssetKey("local_models")],
        run_config={"ops": {"local_models": {"config": {"families": ["AutoTheta"]}}}},
    )
    assert result.success
    after = _rows(db_engine)
    theta = after[after["model_name"] == "AutoTheta"]
    assert len(theta) == 2 * 24 and set(theta["cutoff"]) == {pd.Timestamp("2016-10-31 23:00")}
    untouched = after[after["model_name"] != "AutoTheta"].reset_index(drop=True)
    pd.testing.assert_frame_equal(untouched, before)


def test_two_runs_for_different_families_of_one_window_run_at_once_without_mixing(history, db_engine):
    before = _rows(db_engine)
    families = ("AutoETS", "ADIDA")
    workers = [
        subprocess.Popen([sys.executable, "-c", FIT_ONE_FAMILY, SECOND_WINDOW, family]) for family in families
    ]
    assert [worker.wait(timeout=600) for worker in workers] == [0, 0]
    after = _rows(db_engine)
    written = after[after["model_name"].isin(families)]
    assert written.groupby("model_name").size().to_dict() == {family: 2 * 24 for family in families}
    # Each family's rows come from its own run, and nothing else changed.
    assert written.groupby("model_name")["dagster_run_id"].nunique().to_dict() == dict.fromkeys(families, 1)
    assert written["dagster_run_id"].nunique() == 2
    pd.testing.assert_frame_equal(after[~after["model_name"].isin(families)].reset_index(drop=True), before)
