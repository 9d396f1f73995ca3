"""User stories of the ingestion front door, on real PostgreSQL and a real Dagster instance.

A week lands → only its cells run; the same file lands twice → nothing runs; a series arrives
later → only its cells run; a value is restated → the old value is audited and every later
window's panel is stale; series end on different dates → each forecasts from its own end.
Each story uses its own series ids (real EPF prices under new names), so stories do not depend
on each other's order.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest
from dagster import AssetKey
from sqlalchemy import text

from forecasting_pipeline import operations
from forecasting_pipeline.datasets import EPF_FR_BE
from forecasting_pipeline.series_keys import partition_key
from forecasting_pipeline_tests.conftest import TINY_GLOBAL_MODEL, scalar

HOURS_PER_WEEK = 168


def _epf(series: str, renamed: str, start: str, end: str) -> pl.DataFrame:
    """Real hourly prices of one EPF market in [start, end), under a new series id, as text."""
    frame = pl.read_csv(EPF_FR_BE.path(), infer_schema=False)
    return frame.filter(
        (pl.col("unique_id") == series) & (pl.col("ds") >= start) & (pl.col("ds") < end)
    ).with_columns(pl.lit(renamed).alias("unique_id"))


def _land(deployment, name: str, frame: pl.DataFrame) -> None:
    deployment.settings.landing_dir.mkdir(parents=True, exist_ok=True)
    frame.write_csv(deployment.settings.landing_dir / name)


def _ingest(deployment, instance) -> operations.IngestSummary:
    return operations.ingest(instance, deployment, progress=lambda _: None)


def _materialized(db_engine, run_ids: list[str], asset: str) -> list[str]:
    with db_engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                    "AND asset_key = :key AND run_id = ANY(:runs) ORDER BY partition"
                ),
                {"key": f'["{asset}"]', "runs": run_ids},
            ).scalars()
        )


def test_a_new_week_runs_only_its_cells_and_a_file_landed_twice_does_nothing(deployment, instance, db_engine):
    _land(deployment, "week_a_history.csv", _epf("FR", "week-a", "2016-09-01", "2016-10-23"))
    first = _ingest(deployment, instance)
    # The history slice (everything before 2016-10-09) and two weekly windows.
    assert sorted(first.batch.cells["window_key"].to_list()) == ["2016-10-02", "2016-10-09", "2016-10-16"]
    stored = scalar(db_engine, "SELECT count(*) FROM forecasting.observations WHERE series_id = 'week-a'")
    assert stored == 52 * 24

    again = _ingest(deployment, instance)
    assert again.run_ids == [] and again.cells == 0
    assert {f.status for f in again.files} == {"unchanged"}
    # The same content under another name is recognized by its hash.
    _land(deployment, "week_a_copy.csv", _epf("FR", "week-a", "2016-09-01", "2016-10-23"))
    copy = _ingest(deployment, instance)
    assert copy.run_ids == [] and "same content as landed file" in copy.files[-1].message
    assert (
        scalar(db_engine, "SELECT count(*) FROM forecasting.observations WHERE series_id = 'week-a'")
        == stored
    )

    _land(deployment, "week_a_2016-10-23.csv", _epf("FR", "week-a", "2016-10-23", "2016-10-30"))
    week = _ingest(deployment, instance)
    assert week.cells == 1
    assert _materialized(db_engine, week.run_ids, "raw_observations") == ["2016-10-23|week-a"]
    assert scalar(db_engine, "SELECT count(*) FROM forecasting.observations WHERE series_id = 'week-a'") == (
        stored + HOURS_PER_WEEK
    )
    with db_engine.connect() as conn:
        manifest = conn.execute(
            text(
                "SELECT status, rows_read, rows_accepted, rows_quarantined, first_ts, last_ts, series_ids "
                "FROM forecasting.landed_files WHERE file_name = 'week_a_2016-10-23.csv'"
            )
        ).one()
    assert tuple(manifest) == (
        "ingested",
        HOURS_PER_WEEK,
        HOURS_PER_WEEK,
        0,
        datetime(2016, 10, 23),
        datetime(2016, 10, 29, 23),
        ["week-a"],
    )


def test_a_series_arriving_later_runs_only_its_own_cells(deployment, instance, db_engine):
    _land(deployment, "later_first.csv", _epf("FR", "later-first", "2016-10-01", "2016-10-16"))
    _ingest(deployment, instance)
    newcomer = "Store, North / BE"  # commas, slash and spaces: any id works
    _land(deployment, "later_second.csv", _epf("BE", newcomer, "2016-10-01", "2016-10-16"))
    later = _ingest(deployment, instance)

    key = partition_key(newcomer)
    assert later.new_series == [newcomer]
    assert key in instance.get_dynamic_partitions("series")
    assert _materialized(db_engine, later.run_ids, "raw_observations") == [
        f"2016-10-02|{key}",
        f"2016-10-09|{key}",
    ]
    with db_engine.connect() as conn:
        mapped = conn.execute(
            text("SELECT series_id, freq FROM forecasting.series WHERE partition_key = :k"), {"k": key}
        ).one()
    assert tuple(mapped) == (newcomer, "h")


def test_a_restated_value_is_audited_and_makes_later_windows_stale(deployment, instance, db_engine):
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    from forecasting_pipeline.definitions import defs

    original = _epf("FR", "restated", "2016-10-01", "2016-10-23")
    _land(deployment, "restated.csv", original)
    _ingest(deployment, instance)
    panel_job = defs.resolve_job_def("train_models")
    assert panel_job.execute_in_process(
        instance=instance, partition_key="2016-10-16", asset_selection=[AssetKey("training_panel")]
    ).success

    def panel_status():
        assets = list(defs.resolve_asset_graph().assets_defs)
        resolver = get_stale_status_resolver(instance, assets)
        return resolver.get_status(AssetKey("training_panel"), "2016-10-16")

    assert panel_status() == StaleStatus.FRESH

    # A correction of one hour in the history slice, landed as a new file.
    correction = original.filter(pl.col("ds") == "2016-10-05 10:00:00").with_columns(
        pl.lit("99.5").alias("y")
    )
    old_y = float(original.filter(pl.col("ds") == "2016-10-05 10:00:00")["y"][0])
    _land(deployment, "restated_correction.csv", correction)
    restated = _ingest(deployment, instance)

    assert restated.cells == 1
    assert _materialized(db_engine, restated.run_ids, "raw_observations") == ["2016-10-02|restated"]
    assert "2016-10-16" in restated.windows  # later windows' history got a new version
    with db_engine.connect() as conn:
        revision = conn.execute(
            text(
                "SELECT old_y, new_y, old_source, new_source FROM forecasting.observation_revisions "
                "WHERE series_id = 'restated'"
            )
        ).one()
        current = conn.execute(
            text("SELECT y FROM forecasting.observations WHERE series_id = 'restated' AND ts = :ts"),
            {"ts": datetime(2016, 10, 5, 10)},
        ).scalar_one()
    assert tuple(revision) == (old_y, 99.5, "restated.csv", "restated_correction.csv")
    assert current == 99.5
    assert panel_status() == StaleStatus.STALE


def test_series_ending_on_different_dates_forecast_from_their_own_ends(deployment, instance, db_engine):
    _land(deployment, "ragged_long.csv", _epf("FR", "ragged-long", "2016-10-01", "2016-11-01"))
    _land(deployment, "ragged_short.csv", _epf("BE", "ragged-short", "2016-10-01", "2016-10-27"))
    _ingest(deployment, instance)
    keys = [partition_key("ragged-long"), partition_key("ragged-short")]
    order = [k for k in instance.get_dynamic_partitions("series") if k in keys]
    # Forecast only these two series: a window-level panel of this module also holds the other
    # stories' series, which all share the hourly frequency.
    operations.forecast(
        instance,
        "2016-10-30",
        order,
        global_model_config=TINY_GLOBAL_MODEL,
        search_config={"families": []},
        local_model_config={"families": ["SeasonalNaive"]},
    )
    with db_engine.connect() as conn:
        cutoffs = dict(
            conn.execute(
                text(
                    "SELECT series_id, min(cutoff) FROM forecasting.predictions "
                    "WHERE series_id IN ('ragged-long', 'ragged-short') GROUP BY series_id"
                )
            ).all()
        )
    assert cutoffs == {
        "ragged-long": datetime(2016, 10, 31, 23),
        "ragged-short": datetime(2016, 10, 26, 23),
    }


@pytest.fixture(autouse=True)
def _quiet_lightning():
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)


def test_an_ingest_killed_before_versioning_history_is_finished_by_the_next(
    deployment, instance, db_engine, monkeypatch
):
    from forecasting_pipeline.automation import launch

    _land(deployment, "killed.csv", _epf("FR", "killed", "2016-10-01", "2016-10-23"))

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt  # the process dies after accepting, before any history version

    with monkeypatch.context() as patched:
        patched.setattr(launch, "version_history", killed)
        with pytest.raises(KeyboardInterrupt):
            _ingest(deployment, instance)
    assert scalar(db_engine, "SELECT count(*) FROM forecasting.observations WHERE series_id = 'killed'") > 0

    resumed = _ingest(deployment, instance)
    assert resumed.cells == 0  # nothing left to accept ...
    assert resumed.windows[0] == "2016-10-02"  # ... but every window's history is versioned
    assert scalar(db_engine, "SELECT count(*) FROM forecasting.history_pending") == 0
