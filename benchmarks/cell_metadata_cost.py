"""What per-partition metadata costs a series × date run at 1,000 and 10,000 series.

A Dagster asset with the pipeline's partition shape (a date window × a dynamic `series`
dimension, one run over all keys) is materialized three ways on an ephemeral instance: with no
per-key metadata, with each cell's metadata attached in one merge (`add_cell_metadata`, what the
assets do), and (at 1,000 keys only) through Dagster's public per-key call. The difference to
the first is the cost of the metadata. Also times the fan chart the `predictions` pages carry.
Writes benchmarks/results/cell_metadata_cost.json.
"""

import json
import os
import time
from pathlib import Path

import polars as pl
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    DagsterInstance,
    DynamicPartitionsDefinition,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from forecasting_pipeline.assets.cell_metadata import add_cell_metadata, cell_metadata, run_cells

RESULTS = Path(__file__).parent / "results" / "cell_metadata_cost.json"
WINDOW = "2024-01-07"
SERIES = DynamicPartitionsDefinition(name="series")
PARTITIONS = MultiPartitionsDefinition({"date": StaticPartitionsDefinition([WINDOW]), "series": SERIES})
MODE = {"value": "none"}


def _cells(context: AssetExecutionContext) -> pl.DataFrame:
    keys = run_cells(context)
    return keys.select(
        pl.col("window"),
        pl.col("series_key").alias("series_id"),
        (pl.col("series_key").str.len_chars() * 24).alias("observations"),
        pl.lit(0).alias("rows_restated"),
        pl.lit("NHITS").alias("champion"),
    )


@asset(partitions_def=PARTITIONS, backfill_policy=BackfillPolicy.single_run())
def cells(context: AssetExecutionContext) -> None:
    if MODE["value"] == "merged":
        add_cell_metadata(context, _cells(context))
    elif MODE["value"] == "public":
        for key, metadata in cell_metadata(context, _cells(context)).items():
            context.add_asset_metadata(metadata, partition_key=key)


def _run(instance: DagsterInstance, keys: list[str], mode: str) -> float:
    MODE["value"] = mode
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: f"{WINDOW}|{keys[0]}",
        ASSET_PARTITION_RANGE_END_TAG: f"{WINDOW}|{keys[-1]}",
    }
    started = time.perf_counter()
    result = materialize([cells], instance=instance, tags=tags)
    elapsed = time.perf_counter() - started
    assert result.success
    return elapsed


def _fan_chart_ms() -> float:
    from datetime import datetime, timedelta

    from forecasting_pipeline.reporting.plots import fan_chart

    start = datetime(2024, 1, 1)
    history = pl.DataFrame(
        {"ds": [start + timedelta(hours=h) for h in range(96)], "y": [float(h % 24) for h in range(96)]}
    )
    forecast = pl.DataFrame(
        {
            "ds": [start + timedelta(hours=96 + h) for h in range(24)],
            "y_hat": [float(h) for h in range(24)],
            "lo_80": [h - 2.0 for h in range(24)],
            "hi_80": [h + 2.0 for h in range(24)],
            "lo_95": [h - 4.0 for h in range(24)],
            "hi_95": [h + 4.0 for h in range(24)],
        }
    )
    fan_chart(history, forecast, None, title="warm-up")
    started = time.perf_counter()
    for index in range(20):
        fan_chart(history, forecast, history.tail(0), title=f"series {index}")
    return (time.perf_counter() - started) / 20 * 1000


def main() -> None:
    measured: dict[str, dict[str, float]] = {}
    for count in (1_000, 10_000):
        keys = [f"s{index:05d}" for index in range(count)]
        timings: dict[str, float] = {}
        modes = ("none", "merged", "public") if count <= 1_000 else ("none", "merged")
        for mode in modes:
            with DagsterInstance.ephemeral() as instance:
                instance.add_dynamic_partitions("series", keys)
                timings[f"run_{mode}_s"] = round(_run(instance, keys, mode), 2)
        timings["merged_ms_per_key"] = round(
            (timings["run_merged_s"] - timings["run_none_s"]) / count * 1000, 2
        )
        if "run_public_s" in timings:
            timings["public_ms_per_key"] = round(
                (timings["run_public_s"] - timings["run_none_s"]) / count * 1000, 2
            )
        measured[str(count)] = timings
        print(count, timings, flush=True)
    result = {
        "what": "one run over a date window × N series keys: per-key metadata merged once, or per-key calls",
        "keys": measured,
        "fan_chart_ms": round(_fan_chart_ms(), 1),
        "cpus": os.cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
