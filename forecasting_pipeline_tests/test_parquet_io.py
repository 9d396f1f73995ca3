"""The partition-aware IO manager: one run writes many partitions, and a window-level asset reads
all series × date cells of its window as one dict."""

import pandas as pd
import polars as pl
import pytest
from dagster import (
    AssetExecutionContext,
    AssetIn,
    DailyPartitionsDefinition,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
    asset,
    materialize,
)

from forecasting_pipeline.resources.parquet_io import PartitionedParquetIOManager

DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-03")
CELLS = MultiPartitionsDefinition({"date": DAYS, "series": StaticPartitionsDefinition(["a b", "c"])})
RANGE = {
    "dagster/asset_partition_range_start": "2024-01-01|a b",
    "dagster/asset_partition_range_end": "2024-01-02|c",
}


@asset(partitions_def=CELLS, io_manager_key="io_manager")
def cells(context: AssetExecutionContext) -> dict[str, pd.DataFrame]:
    return {
        str(key): pd.DataFrame({"key": [str(key)], "value": [float(i)]})
        for i, key in enumerate(context.partition_keys)
    }


@asset(
    partitions_def=DAYS,
    ins={
        "cells": AssetIn(
            partition_mapping=MultiToSingleDimensionPartitionMapping(partition_dimension_name="date")
        )
    },
    io_manager_key="io_manager",
)
def per_day(context: AssetExecutionContext, cells: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {
        day: pd.concat([frame for key, frame in cells.items() if key.startswith(day)], ignore_index=True)
        for day in context.partition_keys
    }


@asset(partitions_def=DAYS, io_manager_key="io_manager")
def as_polars(per_day: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    return {day: frame.with_columns(pl.col("value") * 2) for day, frame in per_day.items()}


def test_one_run_writes_a_rectangle_and_downstream_reads_it_by_window(tmp_path, instance):
    io_manager = PartitionedParquetIOManager(base_dir=str(tmp_path))
    assert materialize([cells], instance=instance, resources={"io_manager": io_manager}, tags=RANGE).success

    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "cells/date=2024-01-01/series=a%20b.parquet",
        "cells/date=2024-01-01/series=c.parquet",
        "cells/date=2024-01-02/series=a%20b.parquet",
        "cells/date=2024-01-02/series=c.parquet",
    ]
    window_range = {
        "dagster/asset_partition_range_start": "2024-01-01",
        "dagster/asset_partition_range_end": "2024-01-02",
    }
    result = materialize(
        [cells.to_source_asset(), per_day],
        instance=instance,
        resources={"io_manager": io_manager},
        tags=window_range,
    )
    assert result.success
    day_two = pd.read_parquet(tmp_path / "per_day" / "2024-01-02.parquet")
    assert sorted(day_two["key"]) == ["2024-01-02|a b", "2024-01-02|c"]

    single = materialize(
        [per_day.to_source_asset(), as_polars],
        instance=instance,
        resources={"io_manager": io_manager},
        partition_key="2024-01-02",
    )
    assert single.success
    doubled = pd.read_parquet(tmp_path / "as_polars" / "2024-01-02.parquet")
    assert sorted(doubled["value"]) == sorted(day_two["value"] * 2)


@asset(partitions_def=CELLS, io_manager_key="io_manager")
def forgets_a_partition(context: AssetExecutionContext) -> dict[str, pd.DataFrame]:
    return {str(context.partition_keys[0]): pd.DataFrame({"x": [1]})}


def test_an_output_missing_partitions_of_its_run_is_refused(tmp_path, instance):
    io_manager = PartitionedParquetIOManager(base_dir=str(tmp_path))
    with pytest.raises(ValueError, match="must return exactly its run's partitions"):
        materialize(
            [forgets_a_partition],
            instance=instance,
            resources={"io_manager": io_manager},
            tags=RANGE,
        )
    assert not list(tmp_path.rglob("*.parquet"))
