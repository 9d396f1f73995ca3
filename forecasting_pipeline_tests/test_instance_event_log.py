"""The instance's event log writes a run's planned materializations in bulk, and the UI's
per-partition states (materialized, failed, in progress) read them exactly as before."""

from __future__ import annotations

import pytest
from dagster import (
    AssetKey,
    BackfillPolicy,
    DagsterRunStatus,
    Definitions,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
)
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from sqlalchemy import text

from forecasting_pipeline.instance import BulkPlannedEventLogStorage

KEYS = [f"probe-{i:03d}" for i in range(250)]
WINDOW = "2024-01-07"
probe_series = DynamicPartitionsDefinition(name="probe_series")
probe_cells = MultiPartitionsDefinition(
    {"series": probe_series, "date": StaticPartitionsDefinition([WINDOW])}
)


@asset(partitions_def=probe_cells, backfill_policy=BackfillPolicy.single_run())
def probe_cells_asset(context) -> MaterializeResult:
    if context.run.tags.get("probe/fail") == "yes":
        raise RuntimeError("this run fails on purpose")
    return MaterializeResult()


PROBE_ASSET = AssetKey("probe_cells_asset")
PROBE_JOB = Definitions(
    assets=[probe_cells_asset], jobs=[define_asset_job("probe_job", selection=[probe_cells_asset])]
).resolve_job_def("probe_job")


def _run(instance, keys: list[str], *, fail: bool = False):
    return PROBE_JOB.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": f"{WINDOW}|{keys[0]}",
            "dagster/asset_partition_range_end": f"{WINDOW}|{keys[-1]}",
            "probe/fail": "yes" if fail else "no",
        },
        raise_on_error=False,
    )


def _planned_rows(db_engine, run_id: str) -> list[str]:
    with db_engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT partition FROM public.event_logs WHERE run_id = :run_id "
                    "AND dagster_event_type = 'ASSET_MATERIALIZATION_PLANNED' ORDER BY id"
                ),
                {"run_id": run_id},
            ).scalars()
        )


@pytest.fixture(scope="module")
def probe_instance(instance):
    instance.add_dynamic_partitions(probe_series.name, KEYS)
    return instance


def test_the_deployment_instance_uses_the_bulk_event_log(probe_instance):
    assert isinstance(probe_instance.event_log_storage, BulkPlannedEventLogStorage)


def test_each_key_keeps_its_own_planned_event_and_the_asset_row_names_the_run(probe_instance, db_engine):
    result = _run(probe_instance, KEYS)
    assert result.success
    planned = _planned_rows(db_engine, result.run_id)
    assert sorted(planned) == sorted(f"{WINDOW}|{key}" for key in KEYS)
    record = probe_instance.get_asset_records([PROBE_ASSET])[0]
    assert record.asset_entry.last_run_id == result.run_id
    status = get_and_update_asset_status_cache_value(probe_instance, PROBE_ASSET, probe_cells)
    assert len(status.deserialize_materialized_partition_subsets(probe_cells)) == len(KEYS)


def test_a_failed_run_marks_exactly_its_keys_failed(probe_instance):
    failing = KEYS[10:20]
    result = _run(probe_instance, failing, fail=True)
    assert probe_instance.get_run_by_id(result.run_id).status == DagsterRunStatus.FAILURE
    status = get_and_update_asset_status_cache_value(probe_instance, PROBE_ASSET, probe_cells)
    failed = set(status.deserialize_failed_partition_subsets(probe_cells).get_partition_keys())
    assert failed == {f"{WINDOW}|{key}" for key in failing}
