"""`landed_files_readable`: landed files that could not be read, with why, as a check.

The new-data sensor reports a failed evaluation the moment it sets a file aside; executed
from the UI, the check lists the files rejected in the last week from the manifest.
"""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from forecasting_pipeline.automation.new_data import READABLE_CHECK
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.storage.staging import recently_rejected_files

RECENT_DAYS = 7


@asset_check(
    asset="raw_observations",
    name=READABLE_CHECK,
    blocking=False,
    description="Every file that landed in the last week could be read (rejected files are set aside).",
)
def landed_files_readable(database: DatabaseResource) -> AssetCheckResult:
    with database.transaction() as conn:
        rejected = recently_rejected_files(conn, RECENT_DAYS)
    return AssetCheckResult(
        passed=not rejected,
        severity=AssetCheckSeverity.WARN,
        metadata={"files": len(rejected), "reasons": "\n".join(f"{name}: {why}" for name, why in rejected)},
    )
