"""Discover the series in the landing folder and make them partitions.

The `series` partitions are dynamic: new ids become keys here (called by the CLI today and by
the new-data sensor), never by editing code.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import polars as pl
from dagster import DagsterInstance

from forecasting_pipeline.datasets import BUNDLED_DATASETS
from forecasting_pipeline.ingestion.validation import validate_rows
from forecasting_pipeline.modeling.frequency import FrequencyError, infer_series_frequency
from forecasting_pipeline.partitions import last_window_end, series_partitions
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.landing import SOURCE, LandingZoneResource
from forecasting_pipeline.schemas import DS, UNIQUE_ID
from forecasting_pipeline.storage.catalog import (
    DatasetRecord,
    SeriesRecord,
    register_dataset,
    register_series,
)
from forecasting_pipeline.storage.observations import quarantine_rows


@dataclass(frozen=True)
class Registration:
    series_ids: list[str]  # every usable id in the landing folder, in partition order
    new_series_ids: list[str]
    quarantined_rows: int


def _dataset_record(source: str) -> DatasetRecord:
    dataset_id = source.rsplit(".", 1)[0]
    bundled = BUNDLED_DATASETS.get(dataset_id)
    if bundled:
        return DatasetRecord(dataset_id, bundled.description, bundled.source, bundled.licence)
    return DatasetRecord(dataset_id, f"landed file {source}", source, "unknown")


def register_landed_series(
    instance: DagsterInstance, database: DatabaseResource, landing: LandingZoneResource
) -> Registration:
    """Register every series id found in landed files, in the database and as partitions."""
    # Rows dated past the last window are refused here too, so they never stretch a series'
    # span (and with it the latest window) into the future.
    checked = validate_rows(landing.read_rows(), placeable_until=last_window_end())
    spans = (
        checked.valid.group_by(UNIQUE_ID)
        .agg(
            pl.col(DS).min().alias("first_ts"),
            pl.col(DS).max().alias("last_ts"),
            pl.col(SOURCE).first().alias("source"),
            pl.col(DS).alias("timestamps"),
        )
        .sort(UNIQUE_ID)
    )
    # Rows of ids that will not become partitions (unusable ids, or no valid row at all) belong
    # to no `raw_observations` run, so they are quarantined here; the rest are, in the runs.
    unusable = checked.quarantined.filter(
        pl.col(UNIQUE_ID).is_null() | ~pl.col(UNIQUE_ID).is_in(spans[UNIQUE_ID].implode())
    )

    records: list[SeriesRecord] = []
    datasets: dict[str, DatasetRecord] = {}
    for row in spans.iter_rows(named=True):
        dataset = _dataset_record(row["source"])
        datasets[dataset.dataset_id] = dataset
        try:
            freq: str | None = infer_series_frequency(pd.Series(row["timestamps"]))
        except FrequencyError:
            freq = None
        records.append(
            SeriesRecord(row[UNIQUE_ID], dataset.dataset_id, freq, row["first_ts"], row["last_ts"])
        )

    with database.transaction() as conn:
        for dataset in datasets.values():
            register_dataset(conn, dataset)
        register_series(conn, records)
        quarantined = quarantine_rows(conn, unusable, run_id=None) if unusable.height else 0

    existing = set(instance.get_dynamic_partitions(series_partitions.name))
    new_ids = [r.series_id for r in records if r.series_id not in existing]
    if new_ids:
        instance.add_dynamic_partitions(series_partitions.name, new_ids)
    landed = {r.series_id for r in records}
    return Registration(
        series_ids=[key for key in instance.get_dynamic_partitions(series_partitions.name) if key in landed],
        new_series_ids=new_ids,
        quarantined_rows=quarantined,
    )
