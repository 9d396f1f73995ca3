"""Run and backfill tags: what launched a run and why, and Dagster's partition-range tags."""

from __future__ import annotations

# Dagster reads these: one run over the rectangle first..last key.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"

# Ours: the sensor or schedule that asked, in words why, and the request behind a backfill.
TRIGGER_TAG = "forecasting-pipeline/trigger"
REASON_TAG = "forecasting-pipeline/reason"
REQUEST_TAG = "forecasting-pipeline/request"
# A train_models run carrying it is followed by publishing its window for every series.
PUBLISH_AFTER_TAG = "forecasting-pipeline/publish-after"
