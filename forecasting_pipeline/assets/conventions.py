"""What every pipeline asset shares: batched backfills, Parquet intermediates, run lineage."""

from collections.abc import Callable
from typing import Any

from dagster import AssetExecutionContext, BackfillPolicy, asset
from sqlalchemy import Connection

from forecasting_pipeline import __version__
from forecasting_pipeline.storage.lineage import record_run

CODE_VERSION = __version__
PARQUET_IO_MANAGER = "parquet_io_manager"
# Concurrency pool of steps that hold the accelerator; dagster.yaml and the CLI limit it to 1.
GPU_POOL = "gpu"


def pipeline_asset(**asset_kwargs: Any) -> Callable[..., Any]:
    """`@asset` with the platform's defaults.

    A backfill over many partitions is one run that computes them all, vectorized
    (`context.partition_keys`), never a run per key; outputs are `{partition_key: frame}`
    written by the partition-aware Parquet IO manager; the package version is the code version.
    """
    defaults = {
        "backfill_policy": BackfillPolicy.single_run(),
        "io_manager_key": PARQUET_IO_MANAGER,
        "code_version": CODE_VERSION,
    }
    return asset(**{**defaults, **asset_kwargs})


def note_run(context: AssetExecutionContext, conn: Connection) -> None:
    """Register the Dagster run in the domain schema, so domain rows join to their code version."""
    record_run(conn, context.run_id, context.job_name or "materialize", CODE_VERSION)
