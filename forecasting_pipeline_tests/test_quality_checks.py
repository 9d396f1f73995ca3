"""User story: a landed batch is checked as landed (Great Expectations) → the checks show on
`raw_observations` in Dagster → a batch failing a blocking check is held, its run fails at the
check and nothing downstream runs → an operator releases it and it is accepted."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import AssetCheckKey, AssetKey
from sqlalchemy import text

from forecasting_pipeline import operations
from forecasting_pipeline.checks.landed_quality import CHECK_NAMES
from forecasting_pipeline.datasets import EPF_FR_BE

SERIES = "checked-FR"


def test_the_checks_are_defined_on_raw_observations():
    from forecasting_pipeline.definitions import defs

    checks = defs.resolve_assets_def("raw_observations").check_keys
    assert {key.name for key in checks} == set(CHECK_NAMES)
    assert AssetCheckKey(AssetKey("raw_observations"), "finite_targets") in checks


def test_a_batch_failing_a_blocking_check_is_held_and_stops_downstream(deployment, instance, db_engine):
    week = pl.read_csv(EPF_FR_BE.path(), infer_schema=False).filter(
        (pl.col("unique_id") == "FR") & (pl.col("ds") >= "2016-10-16") & (pl.col("ds") < "2016-10-23")
    )
    # A sensor glitch: one hour in ten came through as "inf" (10% > the 1% threshold).
    broken = (
        week.with_row_index()
        .with_columns(
            pl.when(pl.col("index") % 10 == 0).then(pl.lit("inf")).otherwise(pl.col("y")).alias("y"),
            pl.lit(SERIES).alias("unique_id"),
        )
        .drop("index")
    )
    deployment.settings.landing_dir.mkdir(parents=True, exist_ok=True)
    broken.write_csv(deployment.settings.landing_dir / "glitch.csv")

    with pytest.raises(
        operations.PipelineRunError, match=r"raw_observations: .*blocking asset check.*finite_targets"
    ):
        operations.ingest(instance, deployment, progress=lambda _: None)

    with db_engine.connect() as conn:
        status, reason = conn.execute(
            text("SELECT status, reason FROM forecasting.landed_files WHERE file_name = 'glitch.csv'")
        ).one()
        stored = conn.execute(
            text("SELECT count(*) FROM forecasting.observations WHERE series_id = :s"), {"s": SERIES}
        ).scalar_one()
        result = conn.execute(
            text(
                "SELECT success, unexpected, evaluated, details FROM forecasting.data_quality_results "
                "WHERE check_name = 'finite_targets'"
            )
        ).one()
    assert status == "held" and "finite_targets (10.1% of 168 rows)" in reason
    assert stored == 0  # held, not accepted
    assert (result.success, result.unexpected, result.evaluated) == (False, 17, 168)
    assert "inf" in result.details["sample"]

    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(AssetKey("raw_observations"), "finite_targets")]
    )[AssetCheckKey(AssetKey("raw_observations"), "finite_targets")]
    assert evaluation.status.value == "FAILED"
    # The run stopped at the check: the window's history was not versioned, nothing downstream ran.
    assert not instance.get_materialized_partitions(AssetKey("observation_history"))

    released = operations.ingest(instance, deployment, release_held=True, progress=lambda _: None)
    assert released.cells == 1
    with db_engine.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM forecasting.observations WHERE series_id = :s"), {"s": SERIES}
        ).scalar_one()
    assert stored == 168 - 17  # the 17 "inf" hours stay in quarantine
    assert "2016-10-16" in instance.get_materialized_partitions(AssetKey("observation_history"))
