"""User story: a training run is killed while it holds the GPU slot → the next CLI command marks
it failed and frees the slot → the same window trains and forecasts cleanly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from dagster import DagsterRunStatus

from forecasting_pipeline import operations
from forecasting_pipeline.assets.conventions import GPU_POOL
from forecasting_pipeline.automation.recovery import fail_orphaned_runs
from forecasting_pipeline_tests.conftest import TINY_GLOBAL_MODEL, TINY_SEARCH, land_and_ingest, series_keys

WINDOW = "2016-10-30"

# Trains for far longer than the test waits; it is killed once it holds the gpu slot.
ENDLESS_TRAINING = textwrap.dedent(
    f"""
    from dagster import DagsterInstance
    from forecasting_pipeline import operations
    operations.forecast(DagsterInstance.get(), {WINDOW!r}, ["BE", "FR"],
                        global_model_config={{"max_steps": 1_000_000}},
                        search_config={{"families": []}})
    """
)


def _gpu_slot_holders(instance) -> set[str]:
    return instance.event_log_storage.get_concurrency_info(GPU_POOL).active_run_ids


@pytest.fixture(scope="module")
def ingested(deployment, instance):
    return land_and_ingest(deployment, instance)


def test_a_killed_training_run_is_failed_its_slot_freed_and_the_window_reruns(ingested, instance):
    worker = subprocess.Popen([sys.executable, "-c", ENDLESS_TRAINING])
    try:
        deadline = time.monotonic() + 240
        while not _gpu_slot_holders(instance) and time.monotonic() < deadline:
            assert worker.poll() is None, "the training process ended before it took the gpu slot"
            time.sleep(0.5)
        (killed_run_id,) = _gpu_slot_holders(instance)
    finally:
        worker.kill()
        worker.wait()

    assert instance.get_run_by_id(killed_run_id).status == DagsterRunStatus.STARTED
    assert fail_orphaned_runs(instance) == [killed_run_id]
    assert instance.get_run_by_id(killed_run_id).status == DagsterRunStatus.FAILURE
    assert _gpu_slot_holders(instance) == set()
    assert fail_orphaned_runs(instance) == []

    rerun = operations.forecast(
        instance,
        WINDOW,
        series_keys(instance),
        global_model_config=TINY_GLOBAL_MODEL,
        search_config=TINY_SEARCH,
        local_model_config={"families": ["SeasonalNaive"]},
    )
    assert instance.get_run_by_id(rerun.train_run_id).status == DagsterRunStatus.SUCCESS
