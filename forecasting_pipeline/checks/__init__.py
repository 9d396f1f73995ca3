"""Data-quality suites that judge data as a whole, beside the row-level refusals of ingestion.

Kept import-light: Great Expectations is imported only when a suite actually runs.
"""

from forecasting_pipeline.checks.landed_quality import (
    CHECK_NAMES,
    ExpectationOutcome,
    QualityThresholds,
    validate_landed_batch,
)

__all__ = ["CHECK_NAMES", "ExpectationOutcome", "QualityThresholds", "validate_landed_batch"]
