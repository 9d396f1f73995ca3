"""What every asset records about the run that executes it."""

from __future__ import annotations

from dagster import AssetExecutionContext
from sqlalchemy import Connection

from forecasting_pipeline import __version__
from forecasting_pipeline.storage.lineage import record_run

CODE_VERSION = __version__


def note_run(context: AssetExecutionContext, conn: Connection) -> None:
    """Register the Dagster run in the domain schema, so domain rows join to their code version."""
    record_run(conn, context.run_id, context.job_name or "materialize", CODE_VERSION)
